"""test_serve_cache: the result cache over real HTTP — hits, every top_k from
one entry, TTL expiry, LRU eviction, single flight (identical concurrent
misses computed once; waiters of a request refused by the full queue are
told why), and --cache-entries 0, read from the answers' `cached` flag and
the cache counters in /metrics."""
import struct
import threading
import time
import zlib

import vstest
from vstest import check
from serve_harness import Server, SLOW, fixture_images

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

# --- single flight, the computing request refused by a full queue: the
#     request waiting for the same image gets 429 saying so (it used to be
#     told that an identical request "failed on another image").
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
    # 3. C sends B's first image while B decodes: it waits for B's answer.
    st, h, body = s.predict(B)
    tb.join()
    stb, _, bodyb = res["b"]
    check(stb == 429 and "queue is full" in bodyb.decode(), f"B refused by the queue ({stb} {bodyb[:200]})")
    check(s.metrics()["cache_coalesced_total"] == 1, "C joined B's flight (the case under test)")
    check(st == 429, f"C, waiting on B, gets B's status ({st} {body})")
    check("queue is full" in body["detail"] and "another image" not in body["detail"],
          f"C is told the queue was full: {body['detail']}")
    check(h.get("retry-after") == "1", "C's 429 carries Retry-After")
    # 4. C's image was not cached by the failure: asked again, it is computed
    #    together with A's (a batch of 2 ends A's wait).
    st, _, body = s.predict(B)
    ta.join()
    check(st == 200 and body["cached"] is False, f"B's image computed afterwards ({st})")
    check(res["a"][0] == 200, f"A answered ({res['a'][0]})")
    check(s.stop() == 0, "clean exit")

# --- disabled
with Server("--cache-entries", "0") as s:
    check(s.predict(A)[2]["cached"] is False and s.predict(A)[2]["cached"] is False,
          "nothing is cached with --cache-entries 0")
    c = counters(s)
    check(c["cache_hits_total"] == 0 and c["cache_entries"] == 0, f"no hits {c}")
    check(s.stop() == 0, "clean exit")

vstest.done()
