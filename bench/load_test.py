#!/usr/bin/env python3
"""load_test.py: HTTP load test for `vitserve serve` (standard library only).

Reports requests/s and p50/p99 latency for cache hits and for cache misses at
several concurrencies, and the batch sizes the server formed (from the
batch_size histogram in /metrics, before/after each run).

  # start a server on a free port with the given model, then measure
  bench/load_test.py --vitserve build/release/src/vitserve --model DIR [--server-arg=--max-batch=16]
  # or measure a running server
  bench/load_test.py --url http://127.0.0.1:7860

Misses: every request carries a different image (the same picture with a
unique trailer after the end of the file, which decoders ignore), so none is
served from the cache and each one costs a decode + a forward row.  Hits: the
same image again and again after one warm-up request.  Clients are threads
with one keep-alive connection each; a closed-loop test (each client sends
its next request when the previous answer arrives).
"""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid


def multipart(data, name="img.jpg"):
    b = "lt" + uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return f"multipart/form-data; boundary={b}", body


def histogram(text, name):
    """{le: cumulative count} of a Prometheus histogram in text format."""
    out = {}
    for m in re.finditer(r'^%s_bucket\{le="([^"]+)"\} (\S+)$' % name, text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def metrics(host, port):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return text


def batch_sizes(before, after):
    """Forward passes per batch-size bucket between two scrapes."""
    hb, ha = histogram(before, "batch_size"), histogram(after, "batch_size")
    res, prev_b, prev_a = {}, 0.0, 0.0
    for le in ha:
        nb, na = hb.get(le, 0.0), ha[le]
        n = (na - prev_a) - (nb - prev_b)
        prev_a, prev_b = na, nb
        if n > 0:
            res[le] = int(n)
    s_b = re.search(r"^batch_size_sum (\S+)$", before, re.M)
    s_a = re.search(r"^batch_size_sum (\S+)$", after, re.M)
    c_b = re.search(r"^batch_size_count (\S+)$", before, re.M)
    c_a = re.search(r"^batch_size_count (\S+)$", after, re.M)
    images = float(s_a.group(1)) - float(s_b.group(1))
    passes = float(c_a.group(1)) - float(c_b.group(1))
    return res, (images / passes if passes else 0.0), int(passes)


def run_level(host, port, concurrency, total, image, unique, top_k):
    lat, errors = [], []
    lock = threading.Lock()
    per = max(1, total // concurrency)
    barrier = threading.Barrier(concurrency + 1)

    def client(cid):
        conn = http.client.HTTPConnection(host, port, timeout=300)
        mine = []
        barrier.wait()
        for i in range(per):
            data = image + (f"#{cid}-{i}-{uuid.uuid4().hex}".encode() if unique else b"")
            ct, body = multipart(data)
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/predict?top_k={top_k}", body=body,
                             headers={"Content-Type": ct})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    with lock:
                        errors.append(r.status)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(str(e))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=300)
                continue
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            lat.extend(mine)

    th = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in th:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors),
            "error_sample": errors[:3], "rps": len(lat) / wall if wall else 0.0,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def start_server(binary, model, extra):
    cmd = [binary, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", *extra]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    port = None
    for raw in p.stderr:
        line = json.loads(raw)
        if line.get("msg") == "listening":
            port = line["port"]
            break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    sys.exit("server did not become ready")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server, e.g. http://127.0.0.1:7860")
    ap.add_argument("--vitserve", help="binary to start (with --model)")
    ap.add_argument("--model", help="model folder or hub id for --vitserve")
    ap.add_argument("--server-arg", action="append", default=[], help="extra serve flag (repeatable)")
    ap.add_argument("--image", default=None, help="image file (default: a fixture JPEG)")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=256, help="requests per level")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    a = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    image_path = a.image or os.path.join(here, "..", "..", "shared", "fixtures", "hf-reference",
                                         "images", "a01_chelsea_baseline420.jpg")
    image = open(image_path, "rb").read()
    proc = None
    if a.url:
        u = urllib.parse.urlparse(a.url)
        host, port = u.hostname, u.port or 80
    elif a.vitserve and a.model:
        proc, port = start_server(a.vitserve, a.model, a.server_arg)
        host = "127.0.0.1"
    else:
        ap.error("give --url, or --vitserve and --model")

    levels = [int(x) for x in a.concurrency.split(",")]
    results = []
    try:
        run_level(host, port, 1, 1, image, False, a.top_k)  # warm the hit entry
        for kind, unique in (("miss", True), ("hit", False)):
            for c in levels:
                before = metrics(host, port)
                r = run_level(host, port, c, max(a.requests, c), image, unique, a.top_k)
                after = metrics(host, port)
                r["kind"] = kind
                r["batch_sizes"], r["mean_batch"], r["forward_passes"] = batch_sizes(before, after)
                results.append(r)
                if not a.json:
                    print(f"{kind:4} c={c:3}  {r['rps']:8.1f} req/s  p50 {r['p50_ms']:8.2f} ms  "
                          f"p99 {r['p99_ms']:8.2f} ms  errors {r['errors']:3}  "
                          f"passes {r['forward_passes']:4} mean batch {r['mean_batch']:5.2f}  "
                          f"buckets(le) {r['batch_sizes']}", flush=True)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    if a.json:
        print(json.dumps({"image": image_path, "results": results}, indent=1))


if __name__ == "__main__":
    main()
