"""serve_harness: start a real `vitserve serve` on loopback (port 0) and talk
HTTP to it with the standard library only.

    with Server("--max-batch", "8") as s:
        st, hdrs, body = s.post_files("/predict", [("file", "cat.jpg", data)])

The server's stderr (JSON lines) is collected by a reader thread; the port is
taken from its `"msg":"listening"` line.  Every server started here is
killed when the test exits, also on failure (atexit), so no process is left
behind.  Timeouts are generous because the same tests run against the
ASan + UBSan build.
"""
import atexit
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import vstest

MODEL = os.path.join(vstest.FIXTURE, "model")
IMAGES = os.path.join(vstest.FIXTURE, "images")
SLOW = 4.0 if os.environ.get("VS_SLOW_BUILD") or "asan" in vstest.VITSERVE else 1.0

_live = []


def _kill_all():
    for p in _live:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_all)


def fixture_images():
    """(name, bytes) of the HF reference images the model scores."""
    exp = json.load(open(os.path.join(vstest.FIXTURE, "expected.json"), encoding="utf-8"))
    out = []
    for rec in exp["images"]:
        if rec.get("status") == "ok":
            name = os.path.basename(rec["file"])
            with open(os.path.join(IMAGES, name), "rb") as f:
                out.append((name, f.read()))
    return out


def multipart(fields):
    """fields: [(name, filename, bytes)] -> (content_type, body)."""
    boundary = "vsb" + uuid.uuid4().hex
    parts = []
    for name, filename, data in fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename}"'
        head += "\r\nContent-Type: application/octet-stream\r\n\r\n"
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


class Server:
    def __init__(self, *args, model=MODEL, env=None, wait_ready=True, binary=None):
        self.args = list(args)
        self.lines = []          # parsed JSON log lines
        self.raw = []            # every stderr line
        self.port = None
        self._cv = threading.Condition()
        e = dict(os.environ)
        e.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if env:
            e.update(env)
        cmd = [binary or vstest.VITSERVE, "serve", "--model", model, "--host", "127.0.0.1",
               "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=e)
        _live.append(self.proc)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.time() + 30 * SLOW
        with self._cv:
            while self.port is None and self.proc.poll() is None and time.time() < deadline:
                self._cv.wait(0.1)
        if self.port is None:
            self.kill()
            vstest.check(False, f"server did not report its port: {self.stderr_text()[-2000:]}")
        if wait_ready:
            self.wait_ready()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cv:
                self.raw.append(line)
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    self.lines.append(obj)
                    if obj.get("msg") == "listening" and self.port is None:
                        self.port = int(obj["port"])
                self._cv.notify_all()

    def stderr_text(self):
        with self._cv:
            return "\n".join(self.raw)

    def log(self, msg):
        with self._cv:
            return [l for l in self.lines if l.get("msg") == msg]

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            vstest.check(self.proc.poll() is None,
                         f"server exited early: {self.stderr_text()[-2000:]}")
            try:
                st, _, _ = self.request("GET", "/health", timeout=5)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        vstest.check(False, "server never became ready")

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request on a fresh connection -> (status, headers dict (lower-case), body)."""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post_files(self, path, fields, headers=None, timeout=60):
        ct, body = multipart(fields)
        h = {"Content-Type": ct}
        h.update(headers or {})
        return self.request("POST", path, body=body, headers=h, timeout=timeout)

    def predict(self, data, name="img", top_k=None, path="/predict"):
        q = f"?top_k={top_k}" if top_k is not None else ""
        st, h, body = self.post_files(path + q, [("file", name, data)])
        return st, h, json.loads(body)

    def metrics_text(self):
        st, _, body = self.request("GET", "/metrics")
        vstest.check(st == 200, f"/metrics answered {st}")
        return body.decode()

    def metrics(self):
        """{'name{labels}': value} of every sample."""
        out = {}
        for line in self.metrics_text().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and waits; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            vstest.check(False, f"server did not exit within {timeout * SLOW} s of signal {sig}")
        self._reader.join(timeout=10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self._reader.join(timeout=10)
        return False
