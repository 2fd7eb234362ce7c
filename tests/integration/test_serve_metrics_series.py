"""test_serve_metrics_series: http_requests_total keeps counting every
(method, route, status) the server can answer, even after a client without
a key has produced every refusal it can reach (404, 405, 204, 431 on every
route and method: about 270 distinct series).  The series table used to hold
256, after which new series were silently not counted."""
import http.client

import vstest
from vstest import check
from serve_harness import Server

ROUTES = ["/predict", "/predict/batch", "/health", "/health/live", "/health/ready", "/metrics",
          "/", "/docs", "/openapi.json", "/models/x", "/v2", "/v2/health/live",
          "/v2/health/ready", "/v2/models/x", "/v2/models/x/ready", "/v2/models/x/infer",
          "/nowhere"]
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"]

with Server() as s:
    big = {"X-Pad": "a" * (70 * 1024)}  # over the 64 KiB header cap: 431 on any route
    n = 0
    for headers in ({}, big):
        for route in ROUTES:
            for method in METHODS:
                c = s.conn(timeout=30)
                try:
                    body = b"" if method in ("POST", "PUT", "PATCH") else None
                    c.request(method, route, body=body, headers=headers)
                    c.getresponse().read()
                    n += 1
                finally:
                    c.close()
    m = s.metrics()
    series = [k for k in m if k.startswith("http_requests_total{")]
    check(len(series) > 256, f"the flood made {len(series)} series (needs > 256 to test the bound)")

    # A series not seen before the flood: POST /predict answered 415.
    st, _, b = s.request("POST", "/predict", body=b"not an image",
                         headers={"Content-Type": "application/octet-stream"})
    check(st == 415, f"bytes that are no image: 415 ({st} {b[:200]})")
    key = 'http_requests_total{method="POST",route="/predict",status="415"}'
    check(s.metrics().get(key) == 1, f"{key} counted after {n} other requests")
    check(s.stop() == 0 and "Sanitizer" not in s.stderr_text(), "clean exit")

vstest.done()
