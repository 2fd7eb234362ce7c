"""Exports the PyTorch reference (bench/torch_vit.py) to ONNX, opset 14,
dynamic batch axis.  Usage: export_onnx.py MODEL_DIR OUT.onnx"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_vit  # noqa: E402

m = torch_vit.load(sys.argv[1])
size = int((m.vit.embeddings.position_embeddings.shape[1] - 1) ** 0.5) * m.vit.embeddings.patch_embeddings.projection.kernel_size[0]
x = torch.zeros(1, 3, size, size)
torch.onnx.export(m, x, sys.argv[2], opset_version=14, input_names=["pixel_values"],
                  output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
print(f"wrote {sys.argv[2]}")
