#!/usr/bin/env python3
"""vitserve vs PyTorch vs ONNX Runtime on the same ViT-B/16 weights, side by
side in one run, interleaved (round-robin per batch size) so that machine
noise hits every engine alike.  Prints a table of ms per batch, images/s and
ratios, and the logits difference between the engines.

Usage: bench/compare.py [--build build/release] [--batches 1,8,32]
                        [--rounds 3] [--iters 5] [--threads 2] [--no-ort]
                        [--serve [--serve-seconds 120]]

--serve adds the server load test next to the table: `vitserve serve` on the
same weights, `vs-loadgen` with 32 clients sending distinct 1920x1080 JPEGs
(every request a cache miss: decode + resize + a row of a dynamic batch),
then cache hits at 8 and 32 clients re-sending a 61 KB photo of
../shared/images (a hit costs the upload and its digest: per byte); the misses are reported against the
engine's batch-32 images/s from this run (measured once more right after the
load if batch 32 was not in --batches).
Needs: Debian python3-torch (+ python3-onnx for the export) and, for ONNX
Runtime, `npm ci` in bench/ (onnxruntime-node; see bench/package.json).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(args, env=None, timeout=3600):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(args, capture_output=True, text=True, env=e, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--work", default="/tmp/vitserve-bench")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--no-slow-torch", action="store_true",
                    help="skip PyTorch with the misdetected OpenBLAS kernel")
    ap.add_argument("--int8", action="store_true", help="also vitserve --precision int8 and torch quantize_dynamic")
    ap.add_argument("--skip", default="",
                    help="comma-separated engine kinds to leave out (vitserve fp32, the base, always runs): vs8, torch (the OpenBLAS-"
                         "tuned run; on a machine without OpenBLAS it is the reference BLAS, ~18 s "
                         "per image), torchdnn, torch8, ort")
    ap.add_argument("--serve", action="store_true",
                    help="also the HTTP load test (vs-loadgen against vitserve serve on the same weights)")
    ap.add_argument("--serve-seconds", type=float, default=120,
                    help="length of the cache-miss load run (the hit runs take 10 s each); with 32 "
                         "clients a CPU forms batches of 32 that take ~9 s each, and only whole "
                         "batches count, so a window of N batches is exact to about 1/N")
    a = ap.parse_args()

    vitserve = os.path.join(a.build, "src", "vitserve")
    gen = os.path.join(a.build, "tools", "vs-gen_vit")
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "vit-base")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        print("generating ViT-B/16 (random weights, seed 1) ...", flush=True)
        sh([gen, "--out", model, "--preset", "base", "--seed", "1"])
    onnx = os.path.join(a.work, "vit-base.onnx")
    skip = {k for k in a.skip.split(",") if k}
    ort_ok = not a.no_ort and "ort" not in skip and os.path.isdir(os.path.join(HERE, "node_modules", "onnxruntime-node"))
    if ort_ok and not os.path.exists(onnx):
        print("exporting to ONNX ...", flush=True)
        sh([sys.executable, os.path.join(HERE, "export_onnx.py"), model, onnx])

    threads_env = {"OMP_NUM_THREADS": str(a.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    # Debian's OpenBLAS 0.3.21 does not recognise recent CPUs and falls back
    # to generic kernels; naming the core fixes that (SkylakeX needs AVX-512).
    # Without libopenblas0 installed, torch runs on the reference libblas and
    # the OPENBLAS_* variables change nothing: then to_mkldnn is its best.
    flags = open("/proc/cpuinfo").read()
    core = "SkylakeX" if " avx512f" in flags else "Haswell"
    tuned = f"torch fp32 ({core})"
    print(f"CPU: {next((l.split(':', 1)[1].strip() for l in flags.splitlines() if l.startswith('model name')), '?')}, "
          f"OpenBLAS core for the tuned PyTorch run: {core}")
    engines = [("vitserve fp32", "vs", {}),
               (tuned, "torch", {"OPENBLAS_CORETYPE": core}),
               ("torch fp32 (to_mkldnn)", "torchdnn", {})]
    if not a.no_slow_torch:
        engines.append(("torch fp32 (as installed)", "torch", {"OPENBLAS_CORETYPE": ""}))
    if ort_ok:
        engines.append(("onnxruntime fp32", "ort", {}))
    if a.int8:
        engines.append(("vitserve int8", "vs8", {}))
        engines.append(("torch int8 dynamic", "torch8", {"OPENBLAS_CORETYPE": core}))

    engines = [e for e in engines if e[1] not in skip or e[1] == "vs"]
    batches = [int(b) for b in a.batches.split(",")]
    results = {}   # (engine, batch) -> [median ms per round]
    best = {}      # (engine, batch) -> the fastest single pass of any round
    per_round = {}  # (engine, batch) -> {round: median ms}, for the paired ratios
    logits = {}    # (engine, batch) -> array
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.uniform(-1, 1, size=(b, 3, 224, 224)).astype(np.float32)
        x.tofile(os.path.join(a.work, f"input-{b}.f32"))
    for r in range(a.rounds):
        for b in batches:
            inp = os.path.join(a.work, f"input-{b}.f32")
            for name, kind, env in engines:
                slow = "as installed" in name
                iters = 1 if (slow and b > 1) else a.iters
                out = os.path.join(a.work, f"logits-{kind}-{b}.f32")
                env = dict(threads_env, **env)
                if env.get("OPENBLAS_CORETYPE") == "":
                    env.pop("OPENBLAS_CORETYPE")
                    env["OPENBLAS_CORETYPE_UNSET"] = "1"
                if kind in ("vs", "vs8"):
                    cmd = [vitserve, "bench", "--model", model, "--batch-size", str(b),
                           "--iters", str(iters), "--threads", str(a.threads), "--device", "cpu",
                           "--input", inp, "--save-logits", out, "--json"]
                    if kind == "vs8":
                        cmd += ["--precision", "int8"]
                elif kind.startswith("torch"):
                    mode = {"torch8": ["int8"], "torchdnn": ["mkldnn"]}.get(kind, [])
                    cmd = [sys.executable, os.path.join(HERE, "torch_worker.py"), model, inp,
                           str(b), str(iters), out] + mode
                else:
                    cmd = ["node", os.path.join(HERE, "ort_worker.mjs"), onnx, inp, str(b),
                           str(iters), out, str(a.threads)]
                e = dict(os.environ)
                e.update(env)
                if "OPENBLAS_CORETYPE_UNSET" in e:
                    e.pop("OPENBLAS_CORETYPE", None)
                    e.pop("OPENBLAS_L2_SIZE", None)
                p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=3600)
                if p.returncode != 0:
                    print(f"  {name} b={b}: FAILED {p.stderr[-500:]}", flush=True)
                    continue
                j = json.loads(p.stdout.strip().splitlines()[-1])
                results.setdefault((name, b), []).append(j["median_ms"])
                per_round.setdefault((name, b), {})[r] = j["median_ms"]
                best[(name, b)] = min(best.get((name, b), float("inf")), j["min_ms"])
                logits[(name, b)] = np.fromfile(out, dtype=np.float32)
                print(f"  round {r + 1} b={b:<3} {name:<28} {j['median_ms']:9.1f} ms", flush=True)

    print()
    print(f"ViT-B/16 224x224 (35.1 GFLOP/image), {a.threads} threads, median of {a.rounds} rounds")
    print("(best: the fastest single pass of all rounds, less exposed to other tenants' load;")
    print(" paired: the median over rounds of each round's ratio to vitserve fp32 in that round,")
    print(" the engines of one round running back to back, so a slow spell of the host hits both)")
    print(f"{'engine':<28} {'batch':>5} {'ms/batch':>10} {'ms/image':>9} {'img/s':>7} {'vs vitserve':>12}"
          f" {'best ms/img':>12} {'best vs vs':>11} {'paired':>7}")
    for b in batches:
        base = results.get(("vitserve fp32", b))
        for name, _, _ in engines:
            t = results.get((name, b))
            if not t:
                continue
            med = statistics.median(t)
            ratio = f"{med / statistics.median(base):.2f}x" if base else "-"
            bb, bv = best[(name, b)], best.get(("vitserve fp32", b))
            bratio = f"{bb / bv:.2f}x" if bv else "-"
            mine, theirs = per_round.get((name, b), {}), per_round.get(("vitserve fp32", b), {})
            pairs = [mine[r] / theirs[r] for r in mine if r in theirs]
            pratio = f"{statistics.median(pairs):.2f}x" if pairs else "-"
            print(f"{name:<28} {b:>5} {med:>10.1f} {med / b:>9.1f} {1000 * b / med:>7.2f} {ratio:>12}"
                  f" {bb / b:>12.1f} {bratio:>11} {pratio:>7}")
    print()
    # the reference: the first PyTorch fp32 run that happened (the HF-equivalent
    # module), else ONNX Runtime
    names = [n for n, _, _ in engines]
    refname = next((n for n in (tuned, "torch fp32 (to_mkldnn)", "torch fp32 (as installed)",
                                "onnxruntime fp32") if n in names), None)
    if refname:
        print(f"logits vs {refname}, max |diff| / max |logit|:")
    for b in batches if refname else []:
        ref = logits.get((refname, b))
        if ref is None:
            continue
        scale = float(np.abs(ref).max())
        for name, _, _ in engines:
            y = logits.get((name, b))
            if y is None or name == refname:
                continue
            d = float(np.abs(y - ref).max())
            print(f"  b={b:<3} {name:<28} {d:.3g} abs, {d / scale:.3g} relative")

    if a.serve:
        serve_load(a, vitserve, model, threads_env, results)


def free_port():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def wait_idle(port, limit_s=120):
    """Waits until the server has used under 5% of a core for a second (the
    forward passes of requests still in flight when a load run stopped go
    on after it: a batch of 32 takes ~10 s on 2 cores) and returns the
    seconds waited."""
    def cpu():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("process_cpu_seconds_total "):
                    return float(line.split()[1])
        return 0.0
    t0 = time.monotonic()
    last = cpu()
    while time.monotonic() - t0 < limit_s:
        time.sleep(1.0)
        now = cpu()
        if now - last < 0.05:
            break
        last = now
    return time.monotonic() - t0


def photo_1080p(work):
    """A 1920x1080 JPEG made from a photo of ../shared/images (Pillow)."""
    from PIL import Image
    out = os.path.join(work, "photo-1920x1080.jpg")
    if not os.path.exists(out):
        src = os.path.join(ROOT, "..", "shared", "images", "photos", "hubble_deep_field_1000x872.jpg")
        Image.open(src).convert("RGB").resize((1920, 1080), Image.BICUBIC).save(out, quality=90)
    return out


def serve_load(a, vitserve, model, threads_env, results):
    loadgen = os.path.join(a.build, "tools", "vs-loadgen")
    photo = photo_1080p(a.work)
    small = os.path.join(ROOT, "..", "shared", "images", "photos", "grace_hopper_512x600.jpg")
    port = free_port()
    env = dict(os.environ, **threads_env)
    log = open(os.path.join(a.work, "serve.log"), "w")
    srv = subprocess.Popen([vitserve, "serve", "--model", model, "--host", "127.0.0.1",
                            "--port", str(port), "--threads", str(a.threads), "--device", "cpu",
                            "--log-level", "warn"], env=env, stdout=log, stderr=log)
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if srv.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"vitserve serve did not become ready (see {log.name})")
            time.sleep(0.1)

        def run(conc, seconds, distinct, warmup, image=photo):
            cmd = [loadgen, "--port", str(port), "--file", image, "--concurrency", str(conc),
                   "--seconds", str(seconds), "--warmup", str(warmup), "--json"]
            if distinct:
                cmd.append("--distinct")
            return json.loads(sh(cmd, timeout=int(seconds + warmup) + 600).strip().splitlines()[-1])

        # misses first (an empty cache), with a warm-up long enough for the
        # first full batches to form
        miss = run(32, a.serve_seconds, True, 10)
        # the batches of the misses still in flight finish before the hits
        waited = wait_idle(port)
        print(f"  (waited {waited:.0f} s for the last batches of the miss run)", flush=True)
        hits = [run(c, 10, False, 1, small) for c in (8, 32)]
    finally:
        srv.terminate()
        srv.wait(timeout=60)
        log.close()
    if results.get(("vitserve fp32", 32)):
        eng = 32000 / statistics.median(results[("vitserve fp32", 32)])
        how = "from the table above"
    else:
        out = sh([vitserve, "bench", "--model", model, "--batch-size", "32", "--iters", "3",
                  "--threads", str(a.threads), "--device", "cpu", "--json"], env=threads_env)
        eng = 32000 / json.loads(out.strip().splitlines()[-1])["median_ms"]
        how = "measured right after the load"

    def line(j):
        bad = j["status_4xx"] + j["status_5xx"] + j["transport_errors"]
        return (f"{j['rps']:9.1f} req/s  p50 {j['p50_ms']:8.2f} ms  p99 {j['p99_ms']:8.2f} ms"
                + (f"  ({bad} not 2xx)" if bad else ""))
    print()
    print(f"Through the server (vitserve serve, {a.threads} threads, vs-loadgen on the same cores):")
    print(f"  misses, 32 clients, distinct 1920x1080 JPEGs ({os.path.getsize(photo) // 1000} KB) {line(miss)}")
    print(f"    = {100 * miss['rps'] / eng:.0f}% of the engine's batch-32 rate, {eng:.2f} images/s ({how})")
    for c, j in zip((8, 32), hits):
        print(f"  cache hits, {c:2d} clients, one {os.path.getsize(small) // 1000} KB JPEG        {line(j)}")


if __name__ == "__main__":
    main()
