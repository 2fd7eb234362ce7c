"""test_serve_web: the embedded assets — GET / (the web page), /docs and
/openapi.json (parsed: every path and method it lists answers something
other than 404/405, and it lists every route the server has) — then the web
page in headless Chromium (tests/web/browser.mjs, playwright-core driving
Debian's /usr/bin/chromium): upload a fixture image through the file input
and check the labels shown equal `vitserve classify --json`."""
import json
import os
import shutil

import vstest
from vstest import check
from serve_harness import Server, MODEL, IMAGES, fixture_images

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "web")
imgs = fixture_images()
cfg = json.load(open(os.path.join(MODEL, "config.json"), encoding="utf-8"))
L = len(cfg["id2label"])

with Server() as s:
    st, h, page = s.request("GET", "/")
    check(st == 200 and h.get("content-type", "").startswith("text/html"), f"GET / answered {st}")
    check(b'id="file"' in page and b"/predict" in page, "the page has the file input and calls /predict")
    st, h, _ = s.request("HEAD", "/")
    check(st == 200, f"HEAD / answered {st}")
    st, h, docs = s.request("GET", "/docs")
    check(st == 200 and b"/openapi.json" in docs, f"GET /docs answered {st}")

    st, h, raw = s.request("GET", "/openapi.json")
    check(st == 200 and h.get("content-type") == "application/json", f"/openapi.json answered {st}")
    doc = json.loads(raw)
    check(doc["openapi"].startswith("3.1"), "OpenAPI 3.1")
    code, ver, _ = vstest.vitserve("--version")
    check(doc["info"]["version"] in ver, f"info.version {doc['info']['version']} is the build's ({ver.strip()})")
    _, _, health = s.request("GET", "/health")
    model = json.loads(health)["model"]
    seen = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "head", "options", "put", "delete", "patch"):
                continue
            url = path.replace("{model_name}", model).replace("{model_id}", "google/vit-base")
            check("{" not in url, f"every path parameter filled: {url}")
            body = b"{}" if method == "post" else None
            st, _, _ = s.request(method.upper(), url, body=body,
                                 headers={"Content-Type": "application/json"} if body else {})
            check(st not in (404, 405), f"{method.upper()} {url} (listed in openapi) answered {st}")
            check("responses" in op and str(st) in op["responses"] or st < 300 or st == 503,
                  f"{method.upper()} {url}: status {st} is documented")
            seen.add((method, path))
    # ... and every route the server has is listed.
    for route in [("post", "/predict"), ("post", "/predict/batch"), ("get", "/"), ("post", "/"),
                  ("post", "/models/{model_id}"), ("get", "/health"), ("get", "/health/live"),
                  ("get", "/health/ready"), ("get", "/metrics"), ("get", "/openapi.json"),
                  ("get", "/docs"), ("get", "/v2"), ("get", "/v2/health/live"),
                  ("get", "/v2/health/ready"), ("get", "/v2/models/{model_name}"),
                  ("get", "/v2/models/{model_name}/ready"), ("post", "/v2/models/{model_name}/infer")]:
        check(route in seen, f"openapi lists {route}")

    # --- the page in headless Chromium
    node = shutil.which("node")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not node or not os.path.exists(chromium) or \
            not os.path.isdir(os.path.join(WEB, "node_modules", "playwright-core")):
        vstest.skip("node, chromium or tests/web/node_modules missing")
    name, _ = imgs[0]
    shot = os.path.join(vstest.TMP, "web_page.png")
    if os.path.exists(shot):
        os.remove(shot)
    code, out, err = vstest.run([node, os.path.join(WEB, "browser.mjs"), f"http://127.0.0.1:{s.port}",
                                 os.path.join(IMAGES, name), shot, str(L), chromium], timeout=180)
    check(code == 0, f"browser.mjs failed: {err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    code, cj, err = vstest.vitserve("classify", "--model", MODEL, "--json", "--top-k", str(L),
                                    os.path.join(IMAGES, name))
    check(code == 0, f"classify: {err}")
    ref = json.loads(cj.splitlines()[0])["predictions"]
    check(res["health"] == "ready", f"page shows the server ready: {res['health']}")
    check(res["model"].startswith(model), f"page shows the model: {res['model']}")
    check(res["labels"] == [p["label"] for p in ref], f"page labels {res['labels']} equal classify's")
    check(res["shown"] == [p["label"] if p["label"] else "(empty label)" for p in ref],
          f"shown texts (empty label as '(empty label)'): {res['shown']}")
    check(all(abs(float(t.rstrip("%")) - 100 * p["score"]) < 0.006 for t, p in zip(res["scores"], ref)),
          f"page scores {res['scores']} match classify's")
    check("computed" in res["meta"] and "ms" in res["meta"], f"latency and cached flag shown: {res['meta']}")
    check("cached" in res["meta_again"], f"second classification shown as cached: {res['meta_again']}")
    check(res["error"] == "", f"no error shown: {res['error']}")
    check(res["console_errors"] == [], f"no console errors: {res['console_errors']}")
    check(res["outside_requests"] == [], f"no request leaves the server: {res['outside_requests']}")
    check(os.path.getsize(shot) > 10000, "screenshot written")
    rc = s.stop()
    check(rc == 0 and "Sanitizer" not in s.stderr_text(), f"clean exit (status {rc}, no sanitizer report)")
vstest.done()
