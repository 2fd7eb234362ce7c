"""test_serve_v2: the KServe Open Inference Protocol (v2) routes over real
HTTP — server/model metadata and health, inference on encoded images (BYTES,
base64, a batch) and on preprocessed pixel_values (FP32, flat and nested),
logits compared with the transformers reference logits of the fixture, the
classification output ("score:index:label"), and the error answers."""
import array
import base64
import json
import os

import vstest
from vstest import check
from serve_harness import Server, MODEL

FIX = vstest.FIXTURE
exp = json.load(open(os.path.join(FIX, "expected.json"), encoding="utf-8"))
recs = [r for r in exp["images"] if r.get("status") == "ok"][:3]
cfg = json.load(open(os.path.join(MODEL, "config.json"), encoding="utf-8"))
labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
L = len(labels)
TOL = 1e-4  # our fp32 forward vs transformers' fp32 logits


def b64(rec):
    with open(os.path.join(FIX, rec["file"]), "rb") as f:
        return base64.b64encode(f.read()).decode()


def pixels(rec):
    a = array.array("f")
    with open(os.path.join(FIX, rec["pixel_values"]["file"]), "rb") as f:
        a.frombytes(f.read())
    return list(a)


def infer(s, body, model="model", headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    st, h, data = s.request("POST", f"/v2/models/{model}/infer", body=raw,
                            headers={"Content-Type": "application/json", **(headers or {})})
    return st, h, json.loads(data)


def close(got, want):
    return len(got) == len(want) and all(abs(a - b) <= TOL for a, b in zip(got, want))


with Server() as s:
    st, _, body = s.request("GET", "/v2")
    meta = json.loads(body)
    check(st == 200 and meta["name"] == "vitserve" and "version" in meta and
          "classification" in meta["extensions"], f"GET /v2: {st} {meta}")
    check(json.loads(s.request("GET", "/v2/health/live")[2]) == {"live": True}, "live")
    check(s.request("GET", "/v2/health/ready")[0] == 200, "ready")
    st, _, body = s.request("GET", "/v2/models/model")
    m = json.loads(body)
    check(st == 200 and m["name"] == "model", f"model metadata: {st} {m}")
    ins = {t["name"]: t for t in m["inputs"]}
    check(ins["image"]["datatype"] == "BYTES" and ins["image"]["shape"] == [-1], "input image BYTES [-1]")
    H, W = exp["images"][0]["pixel_values"]["shape"][1:]
    check(ins["pixel_values"]["datatype"] == "FP32" and ins["pixel_values"]["shape"] == [-1, 3, H, W],
          f"input pixel_values FP32 [-1,3,{H},{W}]")
    check(m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, L]}], "output logits")
    st, _, body = s.request("GET", "/v2/models/model/ready")
    check(st == 200 and json.loads(body)["ready"] is True, "model ready")

    # --- BYTES: a batch of encoded images -> logits [n, L]
    st, h, out = infer(s, {"id": "req-7", "inputs": [{"name": "image", "datatype": "BYTES",
                                                       "shape": [3], "data": [b64(r) for r in recs]}]})
    check(st == 200, f"BYTES infer: {st} {out}")
    check(out["model_name"] == "model" and out["id"] == "req-7", "model_name and id echoed")
    o = out["outputs"][0]
    check(o["name"] == "logits" and o["datatype"] == "FP32" and o["shape"] == [3, L], f"output {o['shape']}")
    for i, r in enumerate(recs):
        check(close(o["data"][i * L:(i + 1) * L], r["logits"]),
              f"{r['file']}: logits equal transformers' within {TOL}")
    check(h.get("x-cache") == "miss" and "x-compute-time" in h and "x-queue-time" in h, "timing headers")
    # [n,1] shape and a data: URL; a repeat comes from the cache
    st, h, out = infer(s, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1],
                                       "data": [["data:image/jpeg;base64," + b64(recs[0])]]}]})
    check(st == 200 and close(out["outputs"][0]["data"], recs[0]["logits"]), f"[n,1] + data: URL {st}")
    check(h.get("x-cache") == "hit", "repeat image is a cache hit")

    # --- FP32 pixel_values: flat and nested
    px = [pixels(r) for r in recs[:2]]
    flat = px[0] + px[1]
    st, _, out = infer(s, {"inputs": [{"name": "pixel_values", "datatype": "FP32",
                                       "shape": [2, 3, H, W], "data": flat}]})
    check(st == 200 and out["outputs"][0]["shape"] == [2, L], f"FP32 flat infer: {st} {out}")
    for i in range(2):
        check(close(out["outputs"][0]["data"][i * L:(i + 1) * L], recs[i]["logits"]),
              f"pixel_values {i}: logits equal transformers'")
    nested = [[[p[(c * H + y) * W:(c * H + y + 1) * W] for y in range(H)] for c in range(3)] for p in px[:1]]
    st, _, out = infer(s, {"inputs": [{"name": "pixel_values", "datatype": "FP32",
                                       "shape": [1, 3, H, W], "data": nested}]})
    check(st == 200 and close(out["outputs"][0]["data"], recs[0]["logits"]), f"FP32 nested: {st}")

    # --- classification extension: "score:index:label", best first
    st, _, out = infer(s, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                       "data": [b64(r) for r in recs[:2]]}],
                           "outputs": [{"name": "logits", "parameters": {"classification": 3}}]})
    check(st == 200, f"classification: {st} {out}")
    o = out["outputs"][0]
    check(o["datatype"] == "BYTES" and o["shape"] == [2, 3], f"classification shape {o['shape']}")
    for i, r in enumerate(recs[:2]):
        order = sorted(range(L), key=lambda j: -r["logits"][j])[:3]
        for j, item in enumerate(o["data"][i * 3:(i + 1) * 3]):
            score, idx, label = item.split(":", 2)
            check(int(idx) == order[j] and label == labels[order[j]] and
                  abs(float(score) - r["logits"][order[j]]) <= TOL, f"{item!r} is rank {j} of {r['file']}")
    st, _, out = infer(s, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "data": [b64(recs[0])]}],
                           "outputs": [{"name": "logits", "parameters": {"classification": 99}}]})
    check(st == 200 and out["outputs"][0]["shape"] == [1, L], "classification K clamped to the labels")

    # --- errors: {"error": ...}
    img = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(recs[0])]}
    bad = [
        ("model", b"{nope", 400, "JSON"),
        ("model", {"inputs": []}, 400, "exactly one"),
        ("model", {"inputs": [img, img]}, 400, "exactly one"),
        ("model", {"inputs": [{**img, "name": "text"}]}, 400, "unknown input"),
        ("model", {"inputs": [{**img, "datatype": "FP32"}]}, 400, "BYTES"),
        ("model", {"inputs": [{**img, "shape": [2]}]}, 400, "2 elements"),
        ("model", {"inputs": [{**img, "shape": [40]}]}, 400, "from 1 to 32"),
        ("model", {"inputs": [{**img, "shape": "x"}]}, 400, "shape"),
        ("model", {"inputs": [{**img, "data": ["!!!"]}]}, 400, "base64"),
        ("model", {"inputs": [{**img, "data": [base64.b64encode(b"hello").decode()]}]}, 415, "image"),
        ("model", {"inputs": [{**img, "data": [5]}]}, 400, "not a string"),
        ("model", {"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, H + 1, W],
                               "data": [0.0] * (3 * (H + 1) * W)}]}, 400, f"[n,3,{H},{W}]"),
        ("model", {"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, H, W],
                               "data": [0.0] * 10}]}, 400, "elements"),
        ("model", {"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, H, W],
                               "data": ["x"] * (3 * H * W)}]}, 400, "not a number"),
        ("model", {"inputs": [img], "outputs": [{"name": "probs"}]}, 400, "unknown output"),
        ("model", {"inputs": [img], "outputs": [{"name": "logits", "parameters": {"classification": 0}}]},
         400, "classification"),
        ("other-model", {"inputs": [img]}, 404, "not served"),
    ]
    for model, body, want, word in bad:
        st, h, out = infer(s, body, model, {"X-Request-ID": "v2-err"})
        check(st == want, f"{str(body)[:80]}: {st}, want {want} ({out})")
        check(set(out) == {"error"} and word.lower() in out["error"].lower(),
              f"{str(body)[:60]}: error names '{word}': {out}")
        check(h.get("x-request-id") == "v2-err", "request id on v2 errors")
    # "data" nested deeper than the 8 levels read: the error says so, and does
    # not claim the array holds more elements than the shape (it holds one).
    deep = b64(recs[0])
    for _ in range(10):
        deep = [deep]
    st, _, out = infer(s, {"inputs": [{**img, "data": deep}]})
    check(st == 400 and "nested" in out.get("error", "") and "has more" not in out.get("error", ""),
          f"deeply nested data: {st} {out}")
    # More values than 32 images of pixels: refused from a scan of the text,
    # before jansson allocates for each value (a body of "0," costs ~40-100
    # bytes of memory per value once parsed).
    many = 32 * 3 * H * W + 2048
    raw = (b'{"inputs":[{"name":"pixel_values","datatype":"FP32","shape":[1,3,%d,%d],"data":['
           % (H, W) + b"0," * many + b'0]}]}')
    st, _, out = infer(s, raw)
    check(st == 413 and "values" in out.get("error", ""), f"{many} values in a v2 body: {st} {out}")
    # ... while commas inside strings are not values
    st, _, out = infer(s, {"inputs": [{**img, "data": ["x" + "," * many]}]})
    check(st == 400 and "values" not in out.get("error", ""), f"commas in a string: {st} {out}")
    # The Hugging Face JSON form takes a handful of values.
    st, _, body = s.request("POST", "/", body=b'{"inputs":[' + b"0," * 1000 + b'0]}',
                            headers={"Content-Type": "application/json"})
    check(st == 400 and "values" in json.loads(body).get("detail", json.loads(body).get("error", "")),
          f"1001 values in the HF JSON form: {st} {body[:200]}")
    for path in ("/v2/models/other", "/v2/models/other/ready"):
        st, _, body = s.request("GET", path)
        check(st == 404 and "error" in json.loads(body), f"GET {path}: {st}")
    st, h, _ = s.request("GET", "/v2/models/model/infer")
    check(st == 405 and h.get("allow") == "POST", f"GET on infer: {st}")
    text = s.metrics_text()
    check('inference_requests_total{endpoint="/v2/models/{model}/infer"}' in text, "v2 infer counted")
    check('route="/v2/models/{model}/infer"' in text, "route label for v2 infer")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")
vstest.done()
