"""vstest: helpers shared by the integration tests (stdlib only).

Every test is a plain script run by ctest: it exits 0 when all its checks
pass, 1 on the first failure (with a message), 77 to report "skipped".
Paths come from the environment ctest sets (tests/CMakeLists.txt):
  VITSERVE  the binary under test      VS_SHARED  the shared/ folder
  VS_TOOLS  folder of vs-* tools       VS_TMP     scratch folder
"""
import json
import os
import subprocess
import sys

VITSERVE = os.environ.get("VITSERVE", "vitserve")
SHARED = os.environ.get("VS_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
TOOLS = os.environ.get("VS_TOOLS", "")
TMP = os.environ.get("VS_TMP", "/tmp")
FIXTURE = os.path.join(SHARED, "fixtures", "hf-reference")

_checks = 0


def check(cond, what):
    """Counts a check; fails the test with `what` when cond is false."""
    global _checks
    _checks += 1
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def done():
    print(f"{_checks} passed, 0 failed")
    sys.exit(0)


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def tool(name):
    return os.path.join(TOOLS, "vs-" + name)


def run(args, stdin=None, timeout=300, env=None):
    """Runs a command; returns (exit status, stdout text, stderr text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, env=e)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def vitserve(*args, **kw):
    return run([VITSERVE, *args], **kw)


def json_lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def gen_model(name, *args):
    """Generates a checkpoint with the project's generator (tools/gen_vit.c)
    into VS_TMP/name once per build tree; returns its folder."""
    out = os.path.join(TMP, name)
    stamp = os.path.join(out, ".complete")
    if not os.path.exists(stamp):
        code, so, se = run([tool("gen_vit"), "--out", out, *args], timeout=600)
        check(code == 0, f"gen_vit {args} failed: {se}")
        open(stamp, "w").close()
    return out
