"""CLI end to end against the Hugging Face reference fixtures.

For every fixture image, `vitserve classify --json --logits` on the fixture
checkpoint must give transformers' logits (max |diff| <= 1e-4), the same
top-5 labels in the same order and probabilities within 1e-5; `inspect`
must give Pillow's RGB hash and size; `preprocess` must give the
processor's pixel_values within 1e-6.  Height-1 and height-3 images are
compared with the fixture's channels_last_variant (vitserve treats every
decoded image as the image it is; see the fixture README)."""
import json
import os
import struct

from vstest import FIXTURE, TMP, check, done, json_lines, vitserve

MODEL = os.path.join(FIXTURE, "model")
expected = json.load(open(os.path.join(FIXTURE, "expected.json"), encoding="utf-8"))
labels = expected["model"]["id2label"]


def reference(im):
    """The record vitserve must reproduce for one fixture image."""
    if "channels_last_variant" in im:
        return im["channels_last_variant"]
    return im


images = [im for im in expected["images"]]
paths = [os.path.join(FIXTURE, im["file"]) for im in images]

# classify: all images in one call, batched by 4 (batches != single calls).
code, out, err = vitserve("classify", "--model", MODEL, "--json", "--logits",
                          "--top-k", "5", "--batch-size", "4", "--device", "cpu", *paths)
check(code == 0, f"classify exit {code}: {err}")
rows = json_lines(out)
check(len(rows) == len(images), f"classify printed {len(rows)} lines for {len(images)} images")
worst = 0.0
for im, row in zip(images, rows):
    ref = reference(im)
    name = im["file"]
    check(row.get("file", "").endswith(name), f"{name}: output out of order: {row.get('file')}")
    check("error" not in row, f"{name}: unexpected error {row.get('error')}")
    diff = max(abs(a - b) for a, b in zip(row["logits"], ref["logits"]))
    worst = max(worst, diff)
    check(diff <= 1e-4, f"{name}: logits differ by {diff:.3g} (> 1e-4)")
    got = [(p["label"], p["score"]) for p in row["predictions"]]
    want = [(p["label"], p["score"]) for p in ref["top5"]]
    check([g[0] for g in got] == [w[0] for w in want], f"{name}: top-5 {got} != {want}")
    for (gl, gs), (wl, ws) in zip(got, want):
        check(abs(gs - ws) <= 1e-5, f"{name}: score of {gl!r} {gs} vs {ws}")
print(f"classify: {len(images)} images, max |logit diff| vs transformers = {worst:.3g}")

# Batch size 1 gives the same answers as batch size 4.
code, out1, err = vitserve("classify", "--model", MODEL, "--json", "--logits",
                           "--batch-size", "1", "--device", "cpu", *paths)
check(code == 0, f"classify --batch-size 1 exit {code}: {err}")
for a, b in zip(json_lines(out1), rows):
    d = max(abs(x - y) for x, y in zip(a["logits"], b["logits"]))
    check(d <= 1e-6, f"{a['file']}: batch 1 vs batch 4 differ by {d:.3g}")

# inspect: Pillow's pixels and size after EXIF orientation.
code, out, err = vitserve("inspect", *paths)
check(code == 0, f"inspect exit {code}: {err}")
for im, row in zip(images, json_lines(out)):
    loaded = im["loaded"]
    check(row.get("rgb_sha256") == loaded["rgb_sha256"], f"{im['file']}: rgb hash {row}")
    check([row["width"], row["height"]] == [loaded["width"], loaded["height"]] or
          [row["width"], row["height"]] == loaded.get("size", [None, None]),
          f"{im['file']}: size {row['width']}x{row['height']}")
    check(row["format"] == im["decoded"]["format"], f"{im['file']}: format {row['format']}")

# preprocess: the processor's pixel_values.
for im, path in zip(images, paths):
    ref = reference(im)
    want_file = os.path.join(FIXTURE, ref["pixel_values"]["file"])
    out_file = os.path.join(TMP, "pp-" + os.path.basename(want_file))
    code, _, err = vitserve("preprocess", "--model", MODEL, path, "-o", out_file)
    check(code == 0, f"preprocess {path}: exit {code}: {err}")
    got = open(out_file, "rb").read()
    want = open(want_file, "rb").read()
    check(len(got) == len(want), f"{path}: {len(got)} bytes vs {len(want)}")
    n = len(want) // 4
    g = struct.unpack(f"<{n}f", got)
    w = struct.unpack(f"<{n}f", want)
    d = max(abs(a - b) for a, b in zip(g, w))
    check(d <= 1e-6, f"{path}: pixel_values differ by {d:.3g}")

# Labels survive JSON round trips byte for byte (tabs, quotes, emoji, empty).
code, out, err = vitserve("info", "--model", MODEL, "--json")
check(code == 0, f"info exit {code}: {err}")
info = json.loads(out)
check(info["labels"] == labels, f"labels {info['labels']} != {labels}")
check(info["num_labels"] == 10 and info["hidden_size"] == 48 and info["num_layers"] == 2,
      f"info sizes {info}")
check(info["num_params"] == 48634, f"num_params {info['num_params']} (fixture README: 48,634 values)")
done()
