"""test_serve_guard: how the server looks after itself, over real HTTP —
API keys (missing, wrong, right; open routes stay open; VITSERVE_API_KEYS;
--api-keys-file reloaded on SIGHUP without restart), CORS (preflight,
exposed headers, an origin allow-list), rate limits (429 with Retry-After
and RateLimit / RateLimit-Policy headers; keyed by address, by API key, by
X-Forwarded-For only with --trust-proxy) and the 401/429 counts in
/metrics."""
import json
import os
import signal
import time

import vstest
from vstest import check
from serve_harness import Server, fixture_images, multipart

imgs = fixture_images()
IMG = imgs[0][1]
PRED_ROUTES = ["/predict", "/", "/models/org/name", "/v2/models/model/infer"]


def predict(s, key=None, path="/predict", headers=None):
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if path == "/v2/models/model/infer":
        import base64
        body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "data": [base64.b64encode(IMG).decode()]}]}).encode()
        return s.request("POST", path, body=body, headers=h)
    if path == "/predict":
        ct, body = multipart([("file", "a.jpg", IMG)])
        h["Content-Type"] = ct
        return s.request("POST", path, body=body, headers=h)
    return s.request("POST", path, body=IMG, headers=h)


# ---------------------------------------------------------------- auth
keys_file = os.path.join(vstest.TMP, "guard_keys.txt")
with open(keys_file, "w") as f:
    f.write("# rotated by ops\nfilekey-one\n")
with Server("--api-key", "flagkey", "--api-keys-file", keys_file,
            env={"VITSERVE_API_KEYS": "envkey1,envkey2"}) as s:
    for path in PRED_ROUTES:
        st, h, body = predict(s, None, path)
        check(st == 401, f"{path} without a key: {st}")
        check(h.get("www-authenticate", "").startswith("Bearer"), f"{path}: WWW-Authenticate Bearer")
        err = json.loads(body)
        key = "detail" if path == "/predict" else "error"
        check("missing API key" in err.get(key, ""), f"{path}: 401 body says the key is missing: {err}")
        st, _, body = predict(s, "wrong-key", path)
        check(st == 401 and "invalid API key" in body.decode(), f"{path} with a wrong key: {st}")
        st, _, body = predict(s, "flagkey", path)
        check(st == 200, f"{path} with the right key: {st} {body[:200]}")
    # Keys from the environment, the flag and the file all work (the
    # variable's list joined with the flag's).
    for k in ("envkey1", "envkey2", "flagkey", "filekey-one"):
        st, _, _ = predict(s, k)
        check(st == 200, f"key {k} accepted: {st}")
    st, _, _ = predict(s, None, headers={"Authorization": "Basic ZmxhZ2tleTo="})
    check(st == 401, "Basic auth is not a Bearer key")
    st, _, _ = predict(s, "flagkeyX")
    check(st == 401, "a longer key with the right prefix is refused")
    # Open routes stay open.
    for path in ["/health", "/health/live", "/health/ready", "/metrics", "/", "/docs",
                 "/openapi.json", "/v2", "/v2/health/ready", "/v2/models/model"]:
        st, _, _ = s.request("GET", path)
        check(st == 200, f"GET {path} needs no key: {st}")
    # Reload: rotate the file, SIGHUP, the new key works, the old one not.
    with open(keys_file, "w") as f:
        f.write("filekey-two, filekey-three\n")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline and not s.log("API keys reloaded"):
        time.sleep(0.05)
    rel = s.log("API keys reloaded")
    check(rel and rel[-1].get("keys") == "5", f"reload logged with 5 keys: {rel}")
    check(predict(s, "filekey-two")[0] == 200, "a key added to the file works after SIGHUP")
    check(predict(s, "filekey-one")[0] == 401, "a key removed from the file is refused after SIGHUP")
    check(predict(s, "envkey1")[0] == 200, "environment keys survive the reload")
    # A broken file keeps the keys in force.
    with open(keys_file, "w") as f:
        f.write("bad key with spaces\n")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline and not s.log("API keys not reloaded (previous keys stay)"):
        time.sleep(0.05)
    check(s.log("API keys not reloaded (previous keys stay)"), "failed reload is logged")
    check(predict(s, "filekey-three")[0] == 200, "previous keys stay after a failed reload")
    check(s.proc.poll() is None, "SIGHUP does not stop the server")
    m = s.metrics()
    n401 = sum(v for k, v in m.items() if k.startswith("http_requests_total") and 'status="401"' in k)
    check(n401 >= 10, f"401s counted in http_requests_total: {n401}")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit after SIGTERM ({rc})")

# ---------------------------------------------------------------- CORS
with Server("--rate-limit", "3/minute") as s:
    st, h, body = s.request("OPTIONS", "/predict", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id"})
    check(st == 204 and body == b"", f"preflight answered {st}")
    check(h.get("access-control-allow-origin") == "*", "any origin by default")
    allowed = {x.strip().lower() for x in h.get("access-control-allow-headers", "").split(",")}
    check({"authorization", "content-type", "x-request-id"} <= allowed, f"allowed headers {allowed}")
    check("POST" in h.get("access-control-allow-methods", ""), "POST allowed")
    check(int(h.get("access-control-max-age", "0")) > 0, "Max-Age set")
    check("access-control-allow-credentials" not in h, "never with credentials")
    check(s.request("OPTIONS", "/nowhere")[0] == 404, "OPTIONS on an unknown path is 404")
    # A real cross-origin prediction: headers exposed, timing headers present.
    st, h, _ = predict(s, None, "/", {"Origin": "https://app.example"})
    check(st == 200, f"cross-origin POST / answered {st}")
    exposed = {x.strip().lower() for x in h.get("access-control-expose-headers", "").split(",")}
    for name in ("x-compute-time", "x-queue-time", "x-cache", "x-request-id", "retry-after",
                 "ratelimit", "ratelimit-policy"):
        check(name in exposed, f"{name} exposed to scripts")
        if name not in ("retry-after",):
            check(name in h, f"{name} sent on a prediction")

    # --------------------------------------------------------- rate limit by address
    # One request already spent above; two more, then 429.
    for i in range(2):
        st, h, _ = predict(s)
        check(st == 200, f"request {i + 2} of 3 allowed: {st}")
    check(h.get("ratelimit-policy") == "3;w=60", f"RateLimit-Policy {h.get('ratelimit-policy')}")
    check(h.get("ratelimit", "").startswith("limit=3, remaining=0, reset="), f"RateLimit {h.get('ratelimit')}")
    st, h, body = predict(s)
    check(st == 429, f"4th request within the minute: {st}")
    ra = int(h.get("retry-after", "0"))
    check(1 <= ra <= 20, f"Retry-After {ra} (a token every 20 s)")
    check("rate limit" in json.loads(body)["detail"], "429 says why")
    check(h.get("ratelimit", "").startswith("limit=3, remaining=0"), "RateLimit on the 429 too")
    # X-Forwarded-For is ignored without --trust-proxy: spoofing does not help.
    st, _, _ = predict(s, headers={"X-Forwarded-For": "203.0.113.9"})
    check(st == 429, f"X-Forwarded-For ignored without --trust-proxy: {st}")
    # Health and metrics are never limited.
    check(s.request("GET", "/health")[0] == 200, "/health not rate limited")
    m = s.metrics()
    n429 = sum(v for k, v in m.items() if k.startswith("http_requests_total") and 'status="429"' in k)
    check(n429 == 2, f"429s counted in http_requests_total: {n429}")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")

# ---------------------------------------------------------------- --trust-proxy
with Server("--rate-limit", "2/hour", "--trust-proxy", "--cors-origins",
            "https://ok.example") as s:
    xff = lambda chain: {"X-Forwarded-For": chain}
    # Client A (as our proxy saw it: the right-most entry) spends its 2 tokens...
    check(predict(s, headers=xff("198.51.100.7"))[0] == 200, "A 1/2")
    check(predict(s, headers=xff("10.9.9.9, 198.51.100.7"))[0] == 200, "A 2/2 (left entries are the client's)")
    check(predict(s, headers=xff("1.1.1.1, 198.51.100.7"))[0] == 429,
          "A cannot escape by prepending addresses to X-Forwarded-For")
    # ... while client B behind the same proxy (same socket address) has its own bucket.
    check(predict(s, headers=xff("198.51.100.8"))[0] == 200, "B has its own bucket")
    # Proxies that append the client's port (Azure's Application Gateway
    # does): the port is not part of the client.
    check(predict(s, headers=xff("198.51.100.20:5678"))[0] == 200, "C 1/2 (v4 with a port)")
    check(predict(s, headers=xff("198.51.100.20:6000"))[0] == 200, "C 2/2 (another port, same client)")
    check(predict(s, headers=xff("198.51.100.20"))[0] == 429, "C without a port is the same client")
    check(predict(s, headers=xff("[2001:db8::5]:443"))[0] == 200, "D 1/2 ([v6]:port)")
    check(predict(s, headers=xff("2001:db8::5"))[0] == 200, "D 2/2 (bare v6)")
    check(predict(s, headers=xff("[2001:db8::5]"))[0] == 429, "D in brackets is the same client")
    # Without the header: the socket address, a third bucket.
    check(predict(s)[0] == 200, "no X-Forwarded-For: keyed by the socket address")
    # The CORS allow-list: listed origin echoed (Vary: Origin), others get nothing.
    st, h, _ = s.request("GET", "/health", headers={"Origin": "https://ok.example"})
    check(h.get("access-control-allow-origin") == "https://ok.example" and "origin" in h.get("vary", "").lower(),
          f"listed origin echoed: {h.get('access-control-allow-origin')}")
    st, h, _ = s.request("GET", "/health", headers={"Origin": "https://evil.example"})
    check("access-control-allow-origin" not in h, "unlisted origin gets no CORS header")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")

# ---------------------------------------------------------------- keyed by API key
with Server("--rate-limit", "1/hour", "--api-key", "ka", "--api-key", "kb") as s:
    check(predict(s, "ka")[0] == 200, "key a 1/1")
    check(predict(s, "ka")[0] == 429, "key a limited")
    check(predict(s, "kb")[0] == 200, "key b has its own bucket (same address)")
    check(predict(s, "nokey")[0] == 401, "a wrong key is 401, not 429")
    check(predict(s, "nokey2")[0] == 429, "guessing keys spends the address's bucket: 429")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")

# Bad settings are refused at start.
code, _, err = vstest.vitserve("serve", "--model", "x", "--rate-limit", "10/fortnight", "--port", "0")
check(code != 0 and "--rate-limit" in err, f"bad --rate-limit refused: {code} {err[-300:]}")
code, _, err = vstest.vitserve("serve", "--model", "x", "--cors-origins", "example.com/x", "--port", "0")
check(code != 0 and "--cors-origins" in err, f"bad --cors-origins refused: {code} {err[-300:]}")
vstest.done()
