"""test_serve_hf: the Hugging Face Inference API routes (POST /, POST
/models/{id}) over real HTTP: raw bytes with no / any Content-Type, the JSON
form (base64 and data: URL, top_k, function_to_apply), a browser multipart
form on POST /, errors as {"error"} with X-Request-Id, a client's own Bearer
token while auth is off, timing headers; then the real @huggingface/inference
npm client (tests/web/hf_client.mjs): ArrayBuffer, Blob, /models/{id}, and
the error message surfacing."""
import base64
import json
import math
import os
import shutil

import vstest
from vstest import check
from serve_harness import Server, MODEL, IMAGES, fixture_images, multipart

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "web")
imgs = fixture_images()
cfg = json.load(open(os.path.join(MODEL, "config.json"), encoding="utf-8"))
L = len(cfg["id2label"])


def classify_all(path):
    """Every label's softmax score and raw logit from `vitserve classify`."""
    code, out, err = vstest.vitserve("classify", "--model", MODEL, "--json", "--top-k", str(L), path)
    check(code == 0, f"classify {path}: {err}")
    return json.loads(out.splitlines()[0])["predictions"]


def post(s, path, body, ctype=None, headers=None):
    h = dict(headers or {})
    if ctype is not None:
        h["Content-Type"] = ctype
    st, hd, data = s.request("POST", path, body=body, headers=h)
    return st, hd, json.loads(data)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


with Server() as s:
    name, data = imgs[0]
    ref = classify_all(os.path.join(IMAGES, name))

    # --- raw bytes, no Content-Type (what huggingface_hub sends for bytes/paths)
    st, h, body = post(s, "/", data)
    check(st == 200, f"POST / raw answered {st}: {body}")
    check(h.get("content-type") == "application/json", "JSON answer")
    check(isinstance(body, list) and len(body) == 5, "a list of 5 labels by default")
    check(all(set(p) == {"label", "score"} for p in body), "each item is {label, score}")
    check([p["label"] for p in body] == [p["label"] for p in ref[:5]], "labels equal classify's")
    check(all(abs(a["score"] - b["score"]) <= 1e-7 for a, b in zip(body, ref)),
          "scores equal classify's (softmax default)")
    check(all(body[i]["score"] >= body[i + 1]["score"] for i in range(len(body) - 1)), "sorted")
    check(h.get("x-cache") == "miss", f"first answer X-Cache miss: {h.get('x-cache')}")
    for k in ("x-compute-time", "x-queue-time"):
        check(k in h and float(h[k]) >= 0, f"{k} is a number of ms: {h.get(k)}")
    check(len(h.get("x-request-id", "")) > 0, "X-Request-Id sent")

    # --- any Content-Type: the bytes decide
    for ct in ("application/octet-stream", "image/png", "text/plain", "application/json"):
        st, h, body = post(s, "/", data, ct)
        check(st == 200 and [p["label"] for p in body] == [p["label"] for p in ref[:5]],
              f"raw bytes sent as {ct}: {st} {body}")
        check(h.get("x-cache") == "hit", f"repeat is a cache hit (X-Cache {h.get('x-cache')})")

    # --- JSON form: base64, every function from one cache entry
    b64 = base64.b64encode(data).decode()
    st, _, none = post(s, "/", json.dumps({"inputs": b64, "parameters": {"top_k": L,
                                                                          "function_to_apply": "none"}}),
                       "application/json")
    check(st == 200 and len(none) == L, f"function none, top_k all: {st} {none}")
    raw = [p["score"] for p in none]
    sm = softmax(raw)
    check(all(abs(a - b["score"]) < 1e-6 for a, b in zip(sm, ref)),
          "softmax of the 'none' scores (logits) equals classify's scores")
    st, _, sig = post(s, "/models/any/thing", json.dumps(
        {"inputs": b64, "parameters": {"top_k": 3, "function_to_apply": "sigmoid"}}))
    check(st == 200 and len(sig) == 3, f"sigmoid top 3 on /models/..: {st} {sig}")
    check(all(abs(p["score"] - 1 / (1 + math.exp(-raw[i]))) < 1e-6 for i, p in enumerate(sig)),
          "sigmoid scores = sigmoid(logits)")
    st, _, big = post(s, "/", json.dumps({"inputs": b64, "parameters": {"top_k": 1000}}))
    check(st == 200 and len(big) == L, "top_k above the label count gives every label")
    check(sorted(p["label"] for p in big) == sorted(cfg["id2label"].values()),
          "labels with tabs, quotes, emoji and the empty one survive JSON")
    # data: URL and no parameters
    st, _, du = post(s, "/", json.dumps({"inputs": "data:image/jpeg;base64," + b64}))
    check(st == 200 and [p["label"] for p in du] == [p["label"] for p in ref[:5]], f"data: URL {st}")

    # --- a browser form on POST / (multipart field "file")
    ct, mp = multipart([("file", name, imgs[1][1])])
    st, _, form = post(s, "/", mp, ct)
    ref1 = classify_all(os.path.join(IMAGES, imgs[1][0]))
    check(st == 200 and [p["label"] for p in form] == [p["label"] for p in ref1[:5]],
          f"multipart on POST /: {st} {form}")

    # --- a client's own HF token while auth is off is not refused
    st, _, _ = post(s, "/", data, None, {"Authorization": "Bearer hf_abcdefCachedToken"})
    check(st == 200, f"Bearer hf_ token with auth off answered {st}")

    # --- errors: {"error": ...}, fitting status, X-Request-Id
    cases = [
        (b"", None, 400, "empty"),
        (b"definitely not an image", "application/octet-stream", 415, "image"),
        (b"{not json", "application/json", 400, "JSON"),
        (json.dumps({"parameters": {}}).encode(), "application/json", 400, "inputs"),
        (json.dumps({"inputs": 5}).encode(), "application/json", 400, "inputs"),
        (json.dumps({"inputs": "@@@"}).encode(), "application/json", 400, "base64"),
        (json.dumps({"inputs": "http://example.com/cat.jpg"}).encode(), None, 400, "URL"),
        (json.dumps({"inputs": b64, "parameters": {"top_k": 0}}).encode(), None, 400, "top_k"),
        (json.dumps({"inputs": b64, "parameters": {"function_to_apply": "relu"}}).encode(), None,
         400, "function_to_apply"),
        (json.dumps({"inputs": base64.b64encode(data[:200]).decode()}).encode(), None, 400, "image"),
    ]
    for payload, ct, want, word in cases:
        st, h, err = post(s, "/", payload, ct, {"X-Request-ID": "hf-err-1"})
        check(st == want, f"{payload[:40]!r}: status {st}, want {want} ({err})")
        check(isinstance(err, dict) and set(err) == {"error"} and word.lower() in err["error"].lower(),
              f"{payload[:40]!r}: error body names '{word}': {err}")
        check(h.get("x-request-id") == "hf-err-1", "X-Request-Id echoed on errors")
    st, h, _ = s.request("PUT", "/", body=b"x")
    check(st == 405 and "POST" in h.get("allow", ""), f"PUT / is 405 with Allow: {st} {h.get('allow')}")

    # --- the real npm client
    node = shutil.which("node")
    if not node or not os.path.isdir(os.path.join(WEB, "node_modules", "@huggingface", "inference")):
        vstest.skip("node or tests/web/node_modules missing (scripts/test.sh runs npm ci)")
    code, out, err = vstest.run([node, os.path.join(WEB, "hf_client.mjs"), f"http://127.0.0.1:{s.port}",
                                 os.path.join(IMAGES, name)], timeout=120)
    check(code == 0, f"hf_client.mjs failed: {err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    want = [(p["label"], p["score"]) for p in ref[:5]]
    for k in ("arraybuffer", "blob", "models_path"):
        got = [(p["label"], p["score"]) for p in res[k]]
        check([g[0] for g in got] == [w[0] for w in want] and
              all(abs(g[1] - w[1]) <= 1e-7 for g, w in zip(got, want)),
              f"npm client ({k}) gets classify's answer: {got}")
    e = res["error"]
    check(e is not None and "unrecognized image format" in e["message"],
          f"npm client surfaces the server's error message: {e}")
    check(e["status"] == 415, f"npm client sees the 415 status: {e}")
    check(isinstance(e["requestId"], str) and len(e["requestId"]) == 16,
          f"npm client reads the generated X-Request-Id: {e}")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")
vstest.done()
