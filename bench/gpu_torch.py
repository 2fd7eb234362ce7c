"""vitserve's CUDA backend and PyTorch + transformers on the same GPU, side by
side in one run, on the same weights and the same input tensor.

For each precision and batch size, interleaved: `vitserve bench --device cuda
--input X --save-logits L` (the engine, upload and download included), then
transformers' ViTForImageClassification (SDPA attention, the module in the
checkpoint's dtype cast to the precision) timed the same way: pageable host
pixels uploaded, logits brought back, median wall time of N passes.  Prints a
table of ms, images/s and the ratio, and how far each engine's logits are from
PyTorch fp32 (TF32 off) on the same input.

Runs on the GPU machine (its python3 has torch and transformers), e.g.
  python3 bench/gpu_torch.py --model /tmp/vitb --vitserve .gpu/bin/vitserve
Not a test: timings only, plus the logit differences it states."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def torch_time(model, x, dtype, device, iters, warmup):
    """Median and min wall ms of upload + forward + download; the last logits."""
    ms = []
    out = None
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = model(pixel_values=x.to(device, dtype)).logits
        out = y.float().cpu()
        dt = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            ms.append(dt)
    return statistics.median(ms), min(ms), out.numpy()


def vitserve_time(binary, model, device, prec, batch, iters, warmup, x_path, logits_path):
    cmd = [binary, "bench", "--model", model, "--device", device, "--precision", prec,
           "--batch-size", str(batch), "--iters", str(iters), "--warmup", str(warmup),
           "--input", x_path, "--save-logits", logits_path, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return j["median_ms"], j["min_ms"], np.fromfile(logits_path, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (vs-gen_vit output)")
    ap.add_argument("--vitserve", required=True, help="the vitserve binary (CUDA plugin beside it)")
    ap.add_argument("--batches", default="1,8,128")
    ap.add_argument("--precisions", default="fp32,fp16,bf16")
    ap.add_argument("--device", default="cuda", help="cuda (the point), or cpu to try the script anywhere")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="also write the rows here, one JSON object per line")
    a = ap.parse_args()

    import transformers
    from transformers import ViTForImageClassification

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    base = ViTForImageClassification.from_pretrained(a.model, attn_implementation="sdpa").eval()
    cfg = base.config
    dev_name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"
    print(f"gpu_torch: torch {torch.__version__}, transformers {transformers.__version__}, {dev_name}, "
          f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_labels} labels")
    models = {"fp32": base.to(a.device, torch.float32)}
    rows = []
    tmp = tempfile.mkdtemp(prefix="gpu_torch.")
    gen = torch.Generator().manual_seed(0)
    print(f"{'precision':>9} {'batch':>5} | {'vitserve ms':>11} {'img/s':>8} | {'torch ms':>9} {'img/s':>8} | "
          f"{'speed-up':>8} | {'rel. err vs torch fp32: vitserve':>32} {'torch':>8} | top-1 agree")
    for b in [int(s) for s in a.batches.split(",")]:
        x = torch.randn(b, cfg.num_channels, cfg.image_size, cfg.image_size, generator=gen)
        x_path = os.path.join(tmp, f"x{b}.f32")
        x.numpy().astype(np.float32).tofile(x_path)
        ref = torch_time(models["fp32"], x, torch.float32, a.device, 1, 1)[2]
        for p in a.precisions.split(","):
            if p not in models:
                models[p] = ViTForImageClassification.from_pretrained(
                    a.model, attn_implementation="sdpa").eval().to(a.device, dtypes[p])
            lp = os.path.join(tmp, f"l{b}{p}.f32")
            try:
                v_med, v_min, v_log = vitserve_time(a.vitserve, a.model, a.device, p, b, a.iters,
                                                    a.warmup, x_path, lp)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                print(f"{p:>9} {b:>5} | vitserve failed: {e}", flush=True)
                continue
            t_med, t_min, t_log = torch_time(models[p], x, dtypes[p], a.device, a.iters, a.warmup)
            v_log = v_log.reshape(ref.shape)
            scale = float(np.abs(ref).max()) or 1.0
            v_err = float(np.abs(v_log - ref).max()) / scale
            t_err = float(np.abs(t_log - ref).max()) / scale
            agree = int((v_log.argmax(1) == ref.argmax(1)).sum())
            row = dict(precision=p, batch=b, vitserve_ms=v_med, vitserve_min_ms=v_min,
                       torch_ms=t_med, torch_min_ms=t_min, speedup=t_med / v_med,
                       vitserve_rel_err=v_err, torch_rel_err=t_err, top1_agree=agree,
                       device=dev_name, torch=torch.__version__,
                       transformers=transformers.__version__)
            rows.append(row)
            print(f"{p:>9} {b:>5} | {v_med:11.3f} {b * 1e3 / v_med:8.0f} | {t_med:9.3f} {b * 1e3 / t_med:8.0f} | "
                  f"{t_med / v_med:7.2f}x | {v_err:32.2e} {t_err:8.2e} | {agree}/{b}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
