"""test_serve_api: every route and error status of `vitserve serve` over real
HTTP on loopback, answers equal to `vitserve classify --json`, request ids,
the loading phase, a model that fails to load, /metrics through promtool,
keep-alive across GET, OPTIONS and POST."""
import http.client
import json
import os
import shutil
import subprocess
import threading
import time

import vstest
from vstest import check
from serve_harness import Server, MODEL, IMAGES, fixture_images, multipart

imgs = fixture_images()
check(len(imgs) >= 10, "fixture images present")


def classify_json(path, k):
    code, out, err = vstest.vitserve("classify", "--model", MODEL, "--json", "--top-k", str(k), path)
    check(code == 0, f"classify {path}: {err}")
    return json.loads(out.splitlines()[0])


with Server() as s:
    # --- /predict: multipart field `file`, default top_k 5, parity with classify
    name, data = imgs[0]
    st, h, body = s.predict(data, name)
    check(st == 200, f"/predict answered {st}: {body}")
    check(h.get("content-type", "").startswith("application/json"), "JSON content type")
    check(set(body) == {"predictions", "cached", "processing_time_ms", "model"}, f"keys {set(body)}")
    check(len(body["predictions"]) == 5, "default top_k is 5")
    check(body["cached"] is False, "first answer is not cached")
    check(isinstance(body["processing_time_ms"], (int, float)) and body["processing_time_ms"] >= 0,
          "processing_time_ms is a number")
    ref = classify_json(os.path.join(IMAGES, name), 5)
    check([p["label"] for p in body["predictions"]] == [p["label"] for p in ref["predictions"]],
          "same labels as classify")
    check(all(abs(a["confidence"] - b["score"]) <= 1e-7 for a, b in
              zip(body["predictions"], ref["predictions"])), "same scores as classify")

    # --- every label, tricky names included, round-trips through JSON
    st, _, all10 = s.predict(data, name, top_k=10)
    check(st == 200 and len(all10["predictions"]) == 10, "top_k=10 gives 10 labels")
    exp_labels = json.load(open(os.path.join(MODEL, "config.json"), encoding="utf-8"))["id2label"]
    check(sorted(p["label"] for p in all10["predictions"]) == sorted(exp_labels.values()),
          "labels with tabs, quotes, emoji and the empty label escaped correctly")
    check(all10["cached"] is True, "a later top_k=10 is served from the cache entry")
    check(abs(sum(p["confidence"] for p in all10["predictions"]) - 1) < 1e-5, "softmax sums to 1")

    # --- raw body instead of multipart
    st, _, raw = s.request("POST", "/predict?top_k=3", body=imgs[1][1],
                           headers={"Content-Type": "image/jpeg"})
    check(st == 200, f"raw-body /predict answered {st}: {raw[:200]}")
    ref1 = classify_json(os.path.join(IMAGES, imgs[1][0]), 3)
    check([p["label"] for p in json.loads(raw)["predictions"]] ==
          [p["label"] for p in ref1["predictions"]], "raw body answer equals classify")

    # --- /predict/batch: upload order, per-image objects, duplicates allowed
    fields = [("files", n, d) for n, d in imgs[:4]] + [("files", imgs[0][0], imgs[0][1])]
    st, _, b = s.post_files("/predict/batch?top_k=2", fields)
    check(st == 200, f"/predict/batch answered {st}: {b[:300]}")
    arr = json.loads(b)
    check(isinstance(arr, list) and len(arr) == 5, "one object per file")
    for (n, _), obj in zip(imgs[:4], arr):
        r = classify_json(os.path.join(IMAGES, n), 2)
        check([p["label"] for p in obj["predictions"]] == [p["label"] for p in r["predictions"]],
              f"batch answer for {n} equals classify")
    check(arr[4]["predictions"] == arr[0]["predictions"], "a repeated file gets the same answer")

    # --- health routes
    st, _, hb = s.request("GET", "/health")
    hj = json.loads(hb)
    check(st == 200 and hj["status"] == "healthy" and hj["model_loaded"] is True
          and isinstance(hj["gpu_available"], bool), f"/health: {hj}")
    check(s.request("GET", "/health/live")[0] == 200, "/health/live 200")
    check(s.request("GET", "/health/ready")[0] == 200, "/health/ready 200 once loaded")
    check(s.request("HEAD", "/health")[0] == 200, "HEAD /health")

    # --- request ids: echoed when given, generated otherwise, logged
    st, h, _ = s.request("GET", "/health/live", headers={"X-Request-ID": "trace-abc.123"})
    check(h.get("x-request-id") == "trace-abc.123", "X-Request-ID echoed")
    st, h, _ = s.request("GET", "/health/live")
    gen = h.get("x-request-id", "")
    check(len(gen) >= 8, "X-Request-ID generated when absent")
    st, h, _ = s.request("GET", "/health/live", headers={"X-Request-ID": "bad id with spaces"})
    check(h.get("x-request-id") not in (None, "bad id with spaces"), "unsafe request ids replaced")

    # --- error statuses, always {"detail": "..."}
    def err(status, method, path, body=None, headers=None, contains=None, what=""):
        st, h, b = s.request(method, path, body=body, headers=headers)
        check(st == status, f"{what or method + ' ' + path}: expected {status}, got {st}: {b[:300]}")
        if method != "HEAD":
            j = json.loads(b)
            check(isinstance(j.get("detail"), str) and j["detail"], f"{what}: detail string")
            if contains:
                check(contains in j["detail"], f"{what}: detail {j['detail']!r} mentions {contains!r}")
        return h

    err(404, "GET", "/nope", contains="/nope")
    h = err(405, "GET", "/predict", what="GET /predict")
    check(h.get("allow") == "POST", "405 says Allow: POST")
    err(405, "POST", "/health", body=b"x", what="POST /health")
    err(405, "DELETE", "/metrics", what="DELETE /metrics")
    ct, body0 = multipart([("file", "a.jpg", imgs[0][1])])
    for q in ("0", "21", "11", "abc", "-1", "5x", ""):
        err(400, "POST", f"/predict?top_k={q}", body=body0, headers={"Content-Type": ct},
            contains="top_k", what=f"top_k={q}")
    ct2, body2 = multipart([("image", "a.jpg", imgs[0][1])])
    err(422, "POST", "/predict", body=body2, headers={"Content-Type": ct2}, contains="file",
        what="missing field file")
    err(422, "POST", "/predict", body=b"", headers={"Content-Type": "image/png"},
        what="empty raw body")
    err(422, "POST", "/predict/batch", body=body0, headers={"Content-Type": ct},
        contains="files", what="batch without files field")
    err(400, "POST", "/predict", body=b"--x\r\nno end", headers={"Content-Type": "multipart/form-data; boundary=x"},
        contains="multipart", what="malformed multipart")
    err(400, "POST", "/predict", body=body0, headers={"Content-Type": "multipart/form-data"},
        contains="boundary", what="missing boundary")
    ct3, body3 = multipart([("file", "broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)])
    err(400, "POST", "/predict", body=body3, headers={"Content-Type": ct3}, contains="broken.png",
        what="undecodable image names the file")
    ct4, body4 = multipart([("file", "notes.txt", b"just some text, not an image at all")])
    err(415, "POST", "/predict", body=body4, headers={"Content-Type": ct4}, contains="notes.txt",
        what="not an image format -> 415")
    fields = [("files", n, d) for n, d in imgs[:2]] + [("files", "bad.jpg", b"\xff\xd8\xff\xe0garbage")]
    ctb, bb = multipart(fields)
    err(400, "POST", "/predict/batch", body=bb, headers={"Content-Type": ctb}, contains="bad.jpg",
        what="batch with one undecodable image")
    fields = [("files", f"f{i}.jpg", imgs[0][1]) for i in range(33)]
    ctb, bb = multipart(fields)
    err(400, "POST", "/predict/batch", body=bb, headers={"Content-Type": ctb}, contains="32",
        what="33 files")
    # /predict answers one object: several `file` fields are an error naming
    # /predict/batch (they used to be classified and answered as
    # "{...},{...}", which is not JSON, up to 64 images past the 32 cap).
    ctm, bm = multipart([("file", "a.jpg", imgs[0][1]), ("file", "b.jpg", imgs[1][1])])
    err(400, "POST", "/predict", body=bm, headers={"Content-Type": ctm}, contains="/predict/batch",
        what="two file fields on /predict")

    # --- access log: one line per request with the fields the issue lists
    time.sleep(0.2)
    acc = s.log("request")
    check(len(acc) >= 20, f"access lines logged ({len(acc)})")
    keys = {"time", "request_id", "method", "route", "status", "bytes_in", "bytes_out", "ms", "client"}
    check(all(keys <= set(a) for a in acc), "access lines carry every field")
    check(any(a["request_id"] == "trace-abc.123" for a in acc), "client request id logged")
    check(any(a.get("cache_hit") is True for a in acc), "cache hits logged")
    starting = s.log("starting")
    check(starting and starting[0]["max_batch"] == 32 and starting[0]["max_upload_bytes"] == 20 * 2**20,
          "start-up line states the limits")
    check(s.log("model ready") and "backend" in s.log("model ready")[0], "model line names the backend")

    # --- /metrics: the required families, and promtool's verdict
    text = s.metrics_text()
    for fam in ("inference_requests_total", "inference_duration_seconds", "http_requests_total",
                "http_request_duration_seconds", "batch_size", "queue_wait_seconds", "queue_depth",
                "cache_hits_total", "cache_misses_total", "cache_evictions_total", "cache_entries",
                "model_info", "process_resident_memory_bytes", "process_cpu_seconds_total",
                "process_open_fds", "process_start_time_seconds"):
        check(f"# TYPE {fam} " in text, f"/metrics has {fam}")
    for le in ("0.01", "0.05", "0.1", "0.5", "1", "2", "5", "+Inf"):
        check(f'inference_duration_seconds_bucket{{le="{le}"}}' in text, f"inference bucket {le}")
    m = s.metrics()
    check(m.get('http_requests_total{method="GET",route="other",status="404"}') == 1, "404 counted")
    check(m.get('inference_requests_total{endpoint="/predict"}', 0) >= 3, "inference requests counted")
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        check(p.returncode == 0, f"promtool check metrics: {p.stdout.decode()} {p.stderr.decode()}")
    else:
        print("note: promtool not installed (Debian package prometheus); lint skipped")

    check(s.stop() == 0, "SIGTERM on an idle server exits 0")

# --- the loading phase: config.json is a FIFO, so loading blocks until we write it
fifo_dir = os.path.join(vstest.TMP, "serve-fifo-model")
shutil.rmtree(fifo_dir, ignore_errors=True)
os.makedirs(fifo_dir)
for f in os.listdir(MODEL):
    if f != "config.json":
        os.symlink(os.path.join(MODEL, f), os.path.join(fifo_dir, f))
os.mkfifo(os.path.join(fifo_dir, "config.json"))
with Server(model=fifo_dir, wait_ready=False) as s:
    st, _, b = s.request("GET", "/health")
    check(st == 503 and json.loads(b)["status"] == "loading", f"/health while loading: {st} {b}")
    check(s.request("GET", "/health/live")[0] == 200, "live while loading")
    check(s.request("GET", "/health/ready")[0] == 503, "not ready while loading")
    st, h, b = s.post_files("/predict", [("file", "a.jpg", imgs[0][1])])
    check(st == 503 and "retry-after" in h, f"/predict while loading: 503 + Retry-After ({st})")
    with open(os.path.join(MODEL, "config.json"), "rb") as src, \
            open(os.path.join(fifo_dir, "config.json"), "wb") as dst:
        dst.write(src.read())
    s.wait_ready()
    st, _, j = s.predict(imgs[0][1])
    check(st == 200, "serves once loaded")
    check(s.stop() == 0, "clean exit")

# --- keep-alive: GET routes, a CORS preflight and predictions share one
# connection (GETs and preflights are answered once the request is read to
# its end; an answer queued earlier makes libmicrohttpd close the connection)
for mode in ("2", "0"):
    with Server("--http-threads", mode) as s:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.connect()
        sock0 = c.sock
        steps = [("GET", "/health/live", None, {}), ("GET", "/metrics", None, {}),
                 ("OPTIONS", "/predict", None, {"Origin": "http://example.org",
                                                "Access-Control-Request-Method": "POST"}),
                 ("POST", "/predict", imgs[0][1], {"Content-Type": "image/jpeg"}),
                 ("GET", "/", None, {}), ("HEAD", "/health", None, {}),
                 ("GET", "/health/ready", b"x" * 100, {})]
        for method, path, body, hdrs in steps:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            r.read()
            check(r.status in (200, 204), f"[{mode}] {method} {path}: {r.status}")
            check((r.getheader("Connection") or "").lower() != "close",
                  f"[{mode}] {method} {path} keeps the connection ({r.getheader('Connection')})")
        check(c.sock is sock0, f"[{mode}] every answer came on the first connection")
        c.close()
        check(s.stop() == 0, f"[{mode}] clean exit")

# --- a model that cannot load: /health says failed, the process exits 1
bad = os.path.join(vstest.TMP, "serve-missing-model")
shutil.rmtree(bad, ignore_errors=True)
s = Server(model=bad, wait_ready=False)
rc = s.proc.wait(timeout=60)
check(rc == 1, f"exit status 1 when the model cannot load (got {rc})")
check(any(l.get("level") == "error" for l in s.lines), "the load error is logged")

vstest.done()
