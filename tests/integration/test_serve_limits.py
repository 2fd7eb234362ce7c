"""test_serve_limits: limits over real HTTP — an oversized body is refused
with 413 before it is sent (Content-Length); a chunked one that never ends
is cut off (test_serve_oversize.py has the chunked 413s), pixel
bombs answer 413, stalled clients are disconnected without holding the
server, and the image corpus never makes the server fail (no 5xx, no
crash)."""
import concurrent.futures
import json
import os
import socket
import time

import vstest
from vstest import check
from serve_harness import Server, fixture_images, multipart

imgs = fixture_images()
CORPUS = os.path.join(vstest.SHARED, "images")


def read_response(sock, timeout=30):
    """Reads until the headers and Content-Length body are in (or EOF)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


with Server("--max-upload-bytes", "64k", "--idle-timeout-s", "2") as s:
    # --- Content-Length over the limit: 413 at once, without sending the body
    sk = socket.create_connection(("127.0.0.1", s.port))
    sk.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
               b"Content-Length: 52428800\r\n\r\n")
    resp = read_response(sk)
    check(resp.startswith(b"HTTP/1.1 413"), f"413 before any body byte: {resp[:80]}")
    check(b"exceeds the limit" in resp, "413 detail says why")
    sk.close()

    # --- ... also when the client already started sending the body
    sk = socket.create_connection(("127.0.0.1", s.port))
    sk.sendall(b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               b"Content-Length: 10485760\r\n\r\n")
    sent = 0
    try:
        for _ in range(16):
            sk.sendall(b"\0" * 4096)
            sent += 4096
    except OSError:
        pass
    resp = read_response(sk)
    check(resp.startswith(b"HTTP/1.1 413"), f"413 while the body streams: {resp[:80]}")
    check(sent < 10485760, "answered long before the whole body was sent")
    sk.close()

    # --- endless chunked upload (3 MiB and no last chunk) past the limit:
    #     the server stops reading after another 1 MiB (connection closed)
    sk = socket.create_connection(("127.0.0.1", s.port))
    sk.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    closed = False
    try:
        for _ in range(200):
            sk.sendall(b"4000\r\n" + b"\0" * 0x4000 + b"\r\n")
        resp = read_response(sk, timeout=10)
        closed = not resp.startswith(b"HTTP/1.1 200")
    except OSError:
        closed = True
    check(closed, "a chunked body over the limit is cut off, never answered 200")
    sk.close()

    # --- a body just under the limit is still fine
    st, _, body = s.predict(imgs[0][1])
    check(st == 200, f"a normal upload still works ({st})")

    # --- pixel bomb: a small file declaring 100000 x 100000 pixels
    with open(os.path.join(CORPUS, "bombs", "png_ihdr_100000x100000.png"), "rb") as f:
        bomb = f.read()
    st, _, b = s.predict(bomb, "bomb.png")
    check(st == 413, f"pixel bomb -> 413 ({st} {b})")
    check("bomb.png" in b["detail"], "413 names the file")

    # --- a stalled client is disconnected and does not block others
    stall = socket.create_connection(("127.0.0.1", s.port))
    stall.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    st, _, _ = s.request("GET", "/health")
    check(st == 200, "others are served while a client stalls")
    stall.settimeout(20)
    closed = False
    try:
        while stall.recv(1000):   # EOF (b"") once the server hangs up
            pass
        closed = True
    except socket.timeout:
        closed = False            # still open after 20 s: not closed
    except OSError:
        closed = True             # reset by the server
    check(closed, "the stalled connection is closed by the idle timeout")
    stall.close()
    check(s.stop() == 0, "clean exit")

# --- --max-pixels: an ordinary image over a small limit -> 413
with Server("--max-pixels", "1000") as s:
    st, _, b = s.predict(imgs[0][1], "big.jpg")
    check(st == 413, f"--max-pixels 1000 -> 413 ({st} {b})")
    check(s.stop() == 0, "clean exit")

# --- the image corpus: every verdict is a 200 or a 4xx, never a 5xx or a crash
manifest = json.load(open(os.path.join(CORPUS, "manifest.json"), encoding="utf-8"))
files = manifest["files"]
with Server("--cache-entries", "0") as s:
    def one(rec):
        with open(os.path.join(CORPUS, rec["name"]), "rb") as f:
            data = f.read()
        st, _, b = s.post_files("/predict", [("file", os.path.basename(rec["name"]), data)],
                                timeout=120)
        return rec, st, b

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, files))
    bad = [(r["name"], st) for r, st, _ in results if st not in (200, 400, 413, 415)]
    check(not bad, f"corpus answers are 200 or 4xx: {bad[:10]}")
    wrong = [(r["name"], st) for r, st, _ in results
             if (r["server_expectation"] == "decode" and st != 200)
             or (r["server_expectation"] == "reject" and st == 200)]
    print(f"corpus: {len(results)} files, {len(wrong)} verdicts differ from Pillow's: {wrong[:10]}")
    check(len(wrong) == 0, f"verdicts match Pillow's: {wrong[:10]}")
    check(s.proc.poll() is None, "server alive after the corpus")
    check(s.stop() == 0, "clean exit")

vstest.done()
