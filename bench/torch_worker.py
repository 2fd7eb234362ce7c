"""Times the PyTorch reference on one input tensor: prints one JSON line
{median_ms, min_ms, iters} and writes the logits.  Run by bench/compare.py
in a fresh process per measurement (threading env vars are read at import).
Usage: torch_worker.py MODEL_DIR INPUT.f32 BATCH ITERS LOGITS_OUT [int8|mkldnn]
  int8:   torch.quantization.quantize_dynamic on the Linears
  mkldnn: torch.utils.mkldnn.to_mkldnn (Linears and the conv on oneDNN) —
          the fastest fp32 PyTorch configuration on machines whose BLAS is
          Debian's reference libblas (no OpenBLAS installed)"""
import json
import sys
import time

import numpy as np
import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
import torch_vit  # noqa: E402

model_dir, inp, batch, iters, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))
m = torch_vit.load(model_dir)
in_channels = m.vit.embeddings.patch_embeddings.projection.in_channels
mode = sys.argv[6] if len(sys.argv) > 6 else ""
if mode == "int8":
    m = torch.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
elif mode == "mkldnn":
    from torch.utils import mkldnn as mkldnn_utils
    m = mkldnn_utils.to_mkldnn(m)
x = torch.from_numpy(np.fromfile(inp, dtype=np.float32)).reshape(batch, in_channels, -1)
side = int(round(x.shape[2] ** 0.5))
x = x.reshape(batch, in_channels, side, side)
times = []
with torch.no_grad():
    y = m(x)  # warm-up
    for _ in range(iters):
        t0 = time.perf_counter()
        y = m(x)
        times.append((time.perf_counter() - t0) * 1000)
y.numpy().astype(np.float32).tofile(out)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "iters": iters}))
