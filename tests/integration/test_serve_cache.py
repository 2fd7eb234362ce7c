"""test_serve_cache: the result cache over real HTTP — hits, every top_k from
one entry, TTL expiry, LRU eviction, single flight (identical concurrent
misses computed once; a waiting request whose claimant was refused by the
full queue or timed out in it takes the image over and is answered on its
own deadline), and --cache-entries 0, read from the answers' `cached` flag
and the cache counters in /metrics."""
import base64
import json
import os
import struct
import threading
import time
import zlib

import vstest
from vstest import check
from serve_harness import Server, SLOW, MODEL, fixture_images

imgs = fixture_images()
A, B, C = imgs[0][1], imgs[1][1], imgs[2][1]


def counters(s):
    m = s.metrics()
    return {k: m[k] for k in ("cache_hits_total", "cache_misses_total", "cache_evictions_total",
                              "cache_expirations_total", "cache_coalesced_total", "cache_entries")}


# --- hits, any top_k from one entry, eviction in LRU order
with Server("--cache-entries", "2") as s:
    st, _, a1 = s.predict(A, top_k=3)
    st2, _, a2 = s.predict(A, top_k=10)
    check(st == 200 and st2 == 200, "answers")
    check(a1["cached"] is False and a2["cached"] is True, "second identical request is a hit")
    check(len(a2["predictions"]) == 10, "a hit serves a larger top_k than the first request")
    check(a2["predictions"][:3] == a1["predictions"], "the hit agrees with the computed answer")
    c = counters(s)
    check(c["cache_hits_total"] == 1 and c["cache_misses_total"] == 1, f"counters {c}")
    check(c["cache_entries"] == 1, "one entry")
    s.predict(B)                    # cache: B, A
    s.predict(A)                    # hit; cache: A, B
    s.predict(C)                    # evicts B (least recently used)
    c = counters(s)
    check(c["cache_evictions_total"] == 1 and c["cache_entries"] == 2, f"eviction counted {c}")
    check(s.predict(A)[2]["cached"] is True, "A stayed (recently used)")
    check(s.predict(B)[2]["cached"] is False, "B was evicted")
    check(s.stop() == 0, "clean exit")

# --- TTL expiry
ttl = 1.0 * SLOW
with Server("--cache-ttl-s", str(ttl)) as s:
    check(s.predict(A)[2]["cached"] is False, "miss")
    check(s.predict(A)[2]["cached"] is True, "hit within the TTL")
    time.sleep(ttl + 0.3)
    check(s.predict(A)[2]["cached"] is False, "expired after the TTL")
    c = counters(s)
    check(c["cache_expirations_total"] == 1 and c["cache_misses_total"] == 2, f"expiry counted {c}")
    check(s.stop() == 0, "clean exit")

# A TTL under a millisecond is a short TTL, not "no expiry" (0 is that).
with Server("--cache-ttl-s", "0.0004") as s:
    check(s.predict(A)[2]["cached"] is False, "miss")
    time.sleep(0.05)
    check(s.predict(A)[2]["cached"] is False, "a 0.4 ms TTL has expired 50 ms later")
    check(s.stop() == 0, "clean exit")

# --- single flight: 8 identical requests at once, computed once
with Server("--batch-timeout-ms", str(int(1000 * SLOW))) as s:
    n = 8
    out = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        barrier.wait()
        out[i] = s.predict(A, top_k=5)

    th = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    check(all(o[0] == 200 for o in out), "all answered")
    check(all(o[2]["predictions"] == out[0][2]["predictions"] for o in out), "identical answers")
    c = counters(s)
    check(c["cache_misses_total"] == 1, f"computed once ({c})")
    check(c["cache_hits_total"] + c["cache_coalesced_total"] == n - 1, f"the others waited or hit ({c})")
    check(c["cache_coalesced_total"] >= 1, "at least one request joined the flight")
    check(s.metrics()["batch_size_sum"] == 1, "one image through the model")
    check(sum(1 for o in out if o[2]["cached"] is False) == 1, "exactly one answer computed")
    check(s.stop() == 0, "clean exit")

# --- single flight, the computing request refused by a full queue (429): the
#     refusal is about that request's group, not the image, so the request
#     waiting for the same image takes it over, and its own group of one fits
#     (it used to get the other request's 429).
def slow_pngs(n, side=4000):
    """n distinct PNGs (a tEXt chunk differs) of side x side pixels that
    compress to ~50 KB but take a while to decode and resize."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    idat = chunk(b"IDAT", zlib.compress((b"\0" + b"\x40\x80\xc0" * side) * side, 1))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    return [b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"tEXt", b"n\0%d" % i) + idat + chunk(b"IEND", b"")
            for i in range(n)]


def wait_metric(s, name, value, what):
    deadline = time.time() + 30 * SLOW
    while time.time() < deadline:
        if s.metrics().get(name, 0) >= value:
            return
        time.sleep(0.005)
    check(False, f"timed out waiting for {what} ({name} >= {value})")


def classify_json(data, k=5):
    path = os.path.join(vstest.TMP, "test_serve_cache_image")
    with open(path, "wb") as f:
        f.write(data)
    code, out, err = vstest.vitserve("classify", "--model", MODEL, "--json", "--top-k", str(k), path)
    check(code == 0, f"classify: {err}")
    return json.loads(out.splitlines()[0])


def labels(answer):
    """The labels of a /predict answer or of classify --json, in rank order."""
    return [p["label"] for p in answer["predictions"]]


with Server("--batch-timeout-ms", "60000", "--max-batch", "2", "--max-queue", "2") as s:
    res = {}
    # 1. A's image waits in the queue for company (a batch of 2).
    ta = threading.Thread(target=lambda: res.__setitem__("a", s.predict(A)))
    ta.start()
    wait_metric(s, "queue_depth", 1, "A queued")
    # 2. B claims B and four slow images, decodes them (seconds), then is
    #    refused: 1 queued + 5 > --max-queue 2.
    slow = slow_pngs(4)
    misses = s.metrics()["cache_misses_total"]
    fields = [("files", "b.jpg", B)] + [("files", f"slow{i}.png", d) for i, d in enumerate(slow)]
    tb = threading.Thread(target=lambda: res.__setitem__("b", s.post_files("/predict/batch", fields)))
    tb.start()
    wait_metric(s, "cache_misses_total", misses + 5, "B's images claimed")
    # 3. C sends B's first image while B decodes: it waits on B's claim.  B
    #    is refused; C claims the image itself (a sixth miss) and queues it:
    #    1 queued + 1 fits --max-queue 2, and completes A's batch of 2.
    st, h, body = s.predict(B)
    tb.join()
    ta.join()
    stb, _, bodyb = res["b"]
    check(stb == 429 and "queue is full" in bodyb.decode(), f"B refused by the queue ({stb} {bodyb[:200]})")
    m = s.metrics()
    check(m["cache_coalesced_total"] == 1, "C joined B's flight (the case under test)")
    check(st == 200, f"C, waiting on the refused B, is answered on its own: 200 ({st} {body})")
    check(body["cached"] is False and h.get("x-cache") == "miss", "C computed the image itself")
    ref = classify_json(B)
    check(labels(body) == labels(ref), "C's labels are its image's (classify --json)")
    check(m["cache_misses_total"] == misses + 6, f"C claimed the image after B ({m['cache_misses_total']})")
    check(m["batch_size_count"] == 1 and m["batch_size_sum"] == 2, "A and C computed in one batch")
    check(res["a"][0] == 200, f"A answered ({res['a'][0]})")
    # 4. C's result was cached.
    st, _, body = s.predict(B)
    check(st == 200 and body["cached"] is True, f"B's image is cached after C computed it ({st})")
    check(s.stop() == 0, "clean exit")

# --- single flight, the computing request stops on another of its images (a
#     400 for that image): the images it claimed but never computed are not
#     at fault, so a request waiting for one of them computes it itself (it
#     used to get 429 "failed on another image").
with Server() as s:
    slow = slow_pngs(4)
    fields = [("files", f"slow{i}.png", d) for i, d in enumerate(slow)]
    fields.append(("files", "bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64))
    res = {}
    tb = threading.Thread(target=lambda: res.__setitem__("b", s.post_files("/predict/batch", fields)))
    tb.start()
    # B claims its five images, then decodes the slow ones (seconds) before
    # it reaches bad.png; W sends the first slow image meanwhile.
    wait_metric(s, "cache_misses_total", 5, "B's images claimed")
    st, h, body = s.predict(slow[0])
    tb.join()
    stb, _, bodyb = res["b"]
    check(stb == 400 and "bad.png" in bodyb.decode(), f"B fails on bad.png ({stb} {bodyb[:200]})")
    m = s.metrics()
    check(m["cache_coalesced_total"] == 1, "W joined B's flight (the case under test)")
    check(st == 200, f"W is answered on its own, not with B's failure ({st} {body})")
    check(body["cached"] is False, "W computed the image itself")
    check(labels(body) == labels(classify_json(slow[0])),
          "W's labels are its image's (classify --json)")
    check(m["cache_misses_total"] == 6 and m["batch_size_sum"] == 1,
          f"W's take-over is the one image computed ({m['cache_misses_total']}, {m['batch_size_sum']})")
    check(s.stop() == 0, "clean exit")

# --- single flight, the computing request's deadline passes while its image
#     waits in the queue: it answers 504 at that deadline (its image taken out
#     of the queue then, not when the batcher next looks), and a request
#     waiting for the same image whose own deadline is still ahead takes the
#     image over and computes it (it used to get the other request's 504); a
#     waiter whose own deadline passes gets its own 504.  With --max-batch 2
#     and a 60 s batch timeout a lone image waits until the test sends
#     company, so only the deadlines move things.
RT = 1.0 + 1.0 * SLOW  # --request-timeout-s
X, Y = imgs[3][1], imgs[4][1]
with Server("--batch-timeout-ms", "60000", "--max-batch", "2", "--request-timeout-s", str(RT)) as s:
    res = {}

    def bg(key, data):
        def go():
            t0 = time.time()
            r = s.predict(data)
            res[key] = r + (time.time() - t0,)
        t = threading.Thread(target=go)
        t.start()
        return t

    # 1. A claims X and queues it, alone: it waits for company.
    ta = bg("a", X)
    wait_metric(s, "queue_depth", 1, "A queued")
    # 2. W0 asks for X right after: it waits on A's claim; its deadline is
    #    just after A's.
    t0w = bg("w0", X)
    wait_metric(s, "cache_coalesced_total", 1, "W0 waiting on A's claim")
    # 3. W asks for X half a deadline later: its deadline is well after A's.
    time.sleep(0.5 * RT)
    tw = bg("w", X)
    wait_metric(s, "cache_coalesced_total", 2, "W waiting on A's claim")
    check(s.metrics()["cache_misses_total"] == 1, "only A claimed X so far")
    # 4. A's deadline passes with X still queued: A answers 504 then, not
    #    after a batch (none can run: no company).
    ta.join()
    sta, _, bodya, ela = res["a"]
    check(sta == 504 and "in the queue" in bodya["detail"], f"A timed out in the queue ({sta} {bodya})")
    check(ela < RT + 0.5 * SLOW + 0.5, f"A answered at its deadline ({ela:.2f} s, deadline {RT} s)")
    t0w.join()
    st0, _, body0, el0 = res["w0"]
    check(st0 == 504 and el0 < RT + 0.5 * SLOW + 0.5, f"W0 answers 504 at its own deadline ({st0} {body0} {el0:.2f} s)")
    # 5. W, whose deadline is ahead, took X over (claimed and queued it).
    deadline = time.time() + 30 * SLOW
    while s.metrics()["queue_depth"] != 1 and "w" not in res and time.time() < deadline:
        time.sleep(0.005)
    check("w" not in res, f"W is not answered with A's failure: {res.get('w')}")
    check(s.metrics()["queue_depth"] == 1, "W's X queued")
    # 6. C (image Y) completes W's batch.
    tc = bg("c", Y)
    for t in (tw, tc):
        t.join()
    stw, hw, bodyw, _ = res["w"]
    check(stw == 200, f"W, whose deadline had not passed, is answered 200 ({stw} {bodyw})")
    check(bodyw["cached"] is False and hw.get("x-cache") == "miss", "W computed X itself")
    ref = classify_json(X)
    check(labels(bodyw) == labels(ref),
          f"W's labels are X's (classify --json): {bodyw['predictions']} vs {ref['predictions']}")
    check(all(abs(a["confidence"] - b["score"]) <= 1e-5
              for a, b in zip(bodyw["predictions"], ref["predictions"])), "W's scores are X's")
    check(res["c"][0] == 200, f"C answered ({res['c'][0]})")
    # 7. What /metrics saw: X claimed by A, by W (and by W0 if it took X
    #    over before W did), Y by C; one forward pass (X with Y); two 504s
    #    (A, W0) and two 200s (W, C).
    m = s.metrics()
    check(m["cache_misses_total"] in (3, 4), f"claims: A's X, [W0's X,] W's X, C's Y ({m['cache_misses_total']})")
    check(m["batch_size_count"] == 1 and m["batch_size_sum"] == 2,
          f"forward passes: X with Y ({m['batch_size_count']}, {m['batch_size_sum']})")
    key = 'http_requests_total{method="POST",route="/predict",status="%d"}'
    wait_metric(s, key % 200, 2, "two 200s counted")
    wait_metric(s, key % 504, 2, "two 504s counted")
    m = s.metrics()
    check(m[key % 200] == 2 and m[key % 504] == 2, f"statuses {m[key % 200]} x 200, {m[key % 504]} x 504")
    # 8. W's result was cached: X is a hit now.
    st, _, body = s.predict(X)
    check(st == 200 and body["cached"] is True, f"X is cached after W computed it ({st})")
    check(s.stop() == 0, "clean exit")

# --- a hit answers from the entry's stored ranking (server.c: /predict's
# top 20 of the default score function is kept next to the logits): with
# more labels than that, misses, hits and the HF route (which scores every
# label) agree on labels, order and scores, softmax and sigmoid alike.
for problem in ("single_label_classification", "multi_label_classification"):
    model = vstest.gen_model(f"cache_rank_{problem}", "--labels", "40", "--seed", "7",
                             "--problem-type", problem)
    with Server(model=model) as s:
        for name, img in fixture_images()[:3]:
            st, _, miss = s.predict(img, top_k=20)
            st2, _, hit = s.predict(img, top_k=20)
            st3, _, few = s.predict(img, top_k=7)
            check(st == st2 == st3 == 200, f"{problem} {name}: answers {st} {st2} {st3}")
            check(miss["cached"] is False and hit["cached"] is True and few["cached"] is True,
                  f"{problem} {name}: miss, then hits")
            check(hit["predictions"] == miss["predictions"], f"{problem} {name}: hit == miss")
            check(few["predictions"] == miss["predictions"][:7], f"{problem} {name}: top 7 of 20")
            conf = [p["confidence"] for p in miss["predictions"]]
            check(len(conf) == 20 and conf == sorted(conf, reverse=True),
                  f"{problem} {name}: 20 predictions, best first")
            hf_st, _, hf = s.request("POST", "/", body=json.dumps(
                {"inputs": base64.b64encode(img).decode(),
                 "parameters": {"top_k": 20}}), headers={"Content-Type": "application/json"})
            hf = json.loads(hf)
            check(hf_st == 200 and [(p["label"], p["score"]) for p in hf] ==
                  [(p["label"], p["confidence"]) for p in miss["predictions"]],
                  f"{problem} {name}: /predict's ranking == the HF route's full scoring")
        check(s.stop() == 0, "clean exit")

# --- disabled
with Server("--cache-entries", "0") as s:
    check(s.predict(A)[2]["cached"] is False and s.predict(A)[2]["cached"] is False,
          "nothing is cached with --cache-entries 0")
    c = counters(s)
    check(c["cache_hits_total"] == 0 and c["cache_entries"] == 0, f"no hits {c}")
    check(s.stop() == 0, "clean exit")

vstest.done()
