"""A PyTorch module equivalent to transformers' ViTForImageClassification
(eval mode), loading the same safetensors checkpoint that vitserve loads.

transformers itself is not packaged in Debian 12, so this is a faithful
re-statement of modeling_vit.py's forward pass (patch conv, CLS, position
embeddings, pre-LN encoder blocks, final LayerNorm, classifier on CLS) with
the same parameter names, so `load_state_dict(strict=True)` proves every
tensor is used.  Used by bench/compare.py; needs Debian's python3-torch."""
import json
import math
import os
import struct

import numpy as np
import torch
from torch import nn

ACTS = {
    "gelu": lambda x: nn.functional.gelu(x),
    "gelu_new": lambda x: nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
    "relu": torch.relu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def read_safetensors(path):
    """Returns {name: torch.Tensor} (F32/F16/BF16) from one safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = np.array(data[base + b: base + e])
        if t["dtype"] == "F32":
            arr = torch.from_numpy(raw.view(np.float32).copy())
        elif t["dtype"] == "F16":
            arr = torch.from_numpy(raw.view(np.float16).astype(np.float32))
        elif t["dtype"] == "BF16":
            u = raw.view(np.uint16).astype(np.uint32) << 16
            arr = torch.from_numpy(u.view(np.float32).copy())
        else:
            raise ValueError(f"{path}: {name}: dtype {t['dtype']}")
        out[name] = arr.reshape(t["shape"])
    return out


class Attention(nn.Module):
    def __init__(self, d, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.query = nn.Linear(d, d, bias=qkv_bias)
        self.attention.key = nn.Linear(d, d, bias=qkv_bias)
        self.attention.value = nn.Linear(d, d, bias=qkv_bias)
        self.output = nn.Module()
        self.output.dense = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        h, dh = self.heads, d // self.heads
        a = self.attention

        def split(y):
            return y.view(b, t, h, dh).permute(0, 2, 1, 3)

        q, k, v = split(a.query(x)), split(a.key(x)), split(a.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh)
        p = torch.softmax(s, dim=-1)
        ctx = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(b, t, d)
        return self.output.dense(ctx)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, m = c["hidden_size"], c["intermediate_size"]
        eps = c.get("layer_norm_eps", 1e-12)
        self.act = ACTS[c.get("hidden_act", "gelu")]
        self.attention = Attention(d, c["num_attention_heads"], c.get("qkv_bias", True))
        self.layernorm_before = nn.LayerNorm(d, eps=eps)
        self.layernorm_after = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, m)
        self.output = nn.Module()
        self.output.dense = nn.Linear(m, d)

    def forward(self, x):
        h = x + self.attention(self.layernorm_before(x))
        return h + self.output.dense(self.act(self.intermediate.dense(self.layernorm_after(h))))


class ViTForImageClassification(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        size = c.get("image_size", 224)
        hh, ww = (size, size) if isinstance(size, int) else size
        tokens = (hh // p) * (ww // p) + 1
        self.vit = nn.Module()
        emb = self.vit.embeddings = nn.Module()
        emb.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        emb.position_embeddings = nn.Parameter(torch.zeros(1, tokens, d))
        emb.patch_embeddings = nn.Module()
        emb.patch_embeddings.projection = nn.Conv2d(c.get("num_channels", 3), d, p, stride=p)
        self.vit.encoder = nn.Module()
        self.vit.encoder.layer = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.vit.layernorm = nn.LayerNorm(d, eps=c.get("layer_norm_eps", 1e-12))
        self.classifier = nn.Linear(d, len(c["id2label"]))

    def forward(self, pixels):
        e = self.vit.embeddings
        x = e.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([e.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + e.position_embeddings
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x)[:, 0, :])


def load(model_dir):
    """Builds the module from a vitserve/HF checkpoint folder."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    m = ViTForImageClassification(c)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    sd = {}
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            sd.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        sd = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd = {k: v for k, v in sd.items() if not k.startswith("vit.pooler")}
    m.load_state_dict(sd, strict=True)
    return m.eval()
