#!/usr/bin/python3
"""make_seeds.py: (re)writes the seed part of tests/fuzz/corpus/.

Seeds are the inputs the fuzzers start from; findings (crash-*, cov-*)
are added by hand next to them and are never touched by this script.
Every seed file is named seed-*; running the script again deletes the
old seed-* files and writes them anew, deterministically.

  image/           smallest file (< 20 KB) of each format/category/group of
                   shared/images (manifest.json), plus a few EXIF/orientation
                   edge cases
  preprocess/      a selector byte (see fuzz_preprocess.c) + a valid image
  exif/            EXIF blocks cut out of the corpus' JPEG APP1 segments,
                   plus hand-made TIFF blocks
  safetensors/     small hand-built files, valid and broken
  st_index/        model.safetensors.index.json variants (fuzz_st_index.c's shards)
  config/          the fixture's config.json and variants
  preproc_config/  the fixture's preprocessor_config.json and variants
  multipart/       "Content-Type line\n" + body (see fuzz_multipart.c)
  hub_id/          --model arguments: hub ids, revisions, path tricks

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py [--shared /work/shared]
"""
import argparse
import glob
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
MAX_SEED = 20 * 1024


def reset(sub):
    d = os.path.join(CORPUS, sub)
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "seed-*")):
        os.remove(f)
    return d


def put(d, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def safe(name):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def images(shared):
    root = os.path.join(shared, "images")
    files = json.load(open(os.path.join(root, "manifest.json")))["files"]
    best = {}
    for f in files:
        if f["size_bytes"] > MAX_SEED:
            continue
        key = (f["format"], f["category"], f["group"])
        if key not in best or f["size_bytes"] < best[key]["size_bytes"]:
            best[key] = f
    extra = ["jpeg/pillow/hopper_orientation_6.jpg", "jpeg/pillow/hopper_orientation_5.jpg",
             "jpeg/orient_edge_a/orientation_6_bigendian.jpg",
             "jpeg/orient_edge_a/exif_offset_out_of_range.jpg",
             "jpeg/pillow/multiple_exif.jpg", "webp/pillow/hopper_orientation_5.webp",
             "png/pillow/xmp_tags_orientation_exiftool.png", "gif/pillow/dispose_bgnd.gif",
             "png/pngsuite/basi3p02.png", "bmp/bmpsuite/g_rgb24.bmp"]
    chosen = {f["name"]: f for f in best.values()}
    byname = {f["name"]: f for f in files}
    for n in extra:
        if n in byname:
            chosen[n] = byname[n]
    d = reset("image")
    out = []
    for name in sorted(chosen):
        f = chosen[name]
        data = open(os.path.join(root, name), "rb").read()
        put(d, "%s-%s-%s" % (f["format"], f["category"], safe(os.path.basename(name))), data)
        out.append((f, data))
    return out


def preprocess(chosen):
    d = reset("preprocess")
    valid = [(f, b) for f, b in chosen if f["server_expectation"] == "decode"]
    valid.sort(key=lambda fb: len(fb[1]))
    for i, (f, data) in enumerate(valid[:24]):
        sel = (i * 37) & 0xFF       # walks filters, sizes and the flag bits
        put(d, "%02x-%s" % (sel, safe(os.path.basename(f["name"]))), bytes([sel]) + data)


def jpeg_exif_blocks(data):
    """APP1 Exif payloads of a JPEG (segment walk up to SOS)."""
    i, out = 2, []
    while i + 4 <= len(data) and data[i] == 0xFF:
        m = data[i + 1]
        if m in (0xD9, 0xDA):
            break
        n = struct.unpack(">H", data[i + 2:i + 4])[0]
        seg = data[i + 4:i + 2 + n]
        if m == 0xE1 and seg.startswith(b"Exif\0\0"):
            out.append(seg)
        i += 2 + n
    return out


def tiff(big, entries, trailer=b""):
    """A classic TIFF block with one IFD0 of (tag, type, count, value4)."""
    e = ">" if big else "<"
    b = (b"MM" if big else b"II") + struct.pack(e + "HI", 42, 8)
    b += struct.pack(e + "H", len(entries))
    for tag, typ, cnt, val in entries:
        b += struct.pack(e + "HHI", tag, typ, cnt) + val
    return b + struct.pack(e + "I", 0) + trailer


def exif(shared):
    d = reset("exif")
    seen = set()
    for p in sorted(glob.glob(os.path.join(shared, "images", "jpeg", "**", "*.jp*g"), recursive=True)):
        if os.path.getsize(p) > 200 * 1024:
            continue
        for blk in jpeg_exif_blocks(open(p, "rb").read()):
            if len(blk) > 4096 or blk in seen:
                continue
            seen.add(blk)
            put(d, "app1-" + safe(os.path.basename(p)), blk)
    put(d, "le-orient6-short", tiff(False, [(0x0112, 3, 1, struct.pack("<HH", 6, 0))]))
    put(d, "be-orient8-short", tiff(True, [(0x0112, 3, 1, struct.pack(">HH", 8, 0))]))
    put(d, "le-orient-long", tiff(False, [(0x0112, 4, 1, struct.pack("<I", 3))]))
    put(d, "le-orient-count0", tiff(False, [(0x0112, 3, 0, b"\0\0\0\0")]))
    put(d, "le-model-outofline", tiff(False, [(0x0110, 2, 12, struct.pack("<I", 26))], b"vitserve-cam\0"))
    put(d, "le-outofline-past-end", tiff(False, [(0x0110, 2, 64, struct.pack("<I", 4000))]))
    put(d, "exifprefix-be", b"Exif\0\0" + tiff(True, [(0x0112, 3, 1, struct.pack(">HH", 5, 0)),
                                                      (0x8769, 4, 1, struct.pack(">I", 0))]))
    put(d, "bigtiff", b"II+\0\x08\0\0\0")
    put(d, "short", b"MM\0*")


def st_file(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors():
    d = reset("safetensors")
    put(d, "valid-3", st_file({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "h": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]},
        "b": {"dtype": "BF16", "shape": [1], "data_offsets": [22, 24]}},
        struct.pack("<4f", 1, -2, 0.5, 3e38) + struct.pack("<3H", 0x3C00, 0x7C00, 0x0001) +
        struct.pack("<H", 0x3F80)))
    put(d, "scalar-empty", st_file({
        "s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},
        "z": {"dtype": "U8", "shape": [0, 5], "data_offsets": [8, 8]},
        "e": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [8, 9]}}, bytes(9)))
    put(d, "all-dtypes", st_file({
        n: {"dtype": n, "shape": [1], "data_offsets": [8 * i, 8 * i + s]}
        for i, (n, s) in enumerate([("F64", 8), ("I32", 4), ("I16", 2), ("I8", 1), ("U64", 8),
                                    ("U32", 4), ("U16", 2), ("BOOL", 1), ("F8_E5M2", 1)])},
        bytes(72)))
    put(d, "overlap", st_file({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
    put(d, "size-mismatch", st_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                    bytes(8)))
    put(d, "past-end", st_file({"a": {"dtype": "U8", "shape": [9], "data_offsets": [0, 9]}}, bytes(8)))
    put(d, "padded-header", struct.pack("<Q", 64) +
        b'{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'.ljust(64) + b"\1\2")
    put(d, "header-too-long", struct.pack("<Q", 1 << 40) + b"{}")
    put(d, "empty-object", st_file({}))


def st_index():
    d = reset("st_index")
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    full = {"metadata": {"total_size": 28}, "weight_map": {"a": s1, "b": s1, "c": s2, "a2": s2}}
    put(d, "valid", json.dumps(full, indent=2))
    put(d, "one-shard", json.dumps({"weight_map": {"c": s2}}))
    put(d, "wrong-shard", json.dumps({"weight_map": {"a": s2, "c": s2}}))
    put(d, "dup-name", json.dumps({"weight_map": {"a": s1, "x": "dup.safetensors"}}))
    put(d, "missing-shard", json.dumps({"weight_map": {"a": "nope.safetensors"}}))
    put(d, "path-escape", json.dumps({"weight_map": {"a": "../" + s1}}))
    put(d, "self", json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    put(d, "not-string", json.dumps({"weight_map": {"a": 1}}))


def configs(shared):
    model = os.path.join(shared, "fixtures", "hf-reference", "model")
    cfg_text = open(os.path.join(model, "config.json"), "rb").read()
    pp_text = open(os.path.join(model, "preprocessor_config.json"), "rb").read()
    d = reset("config")
    put(d, "fixture", cfg_text)
    cfg = json.loads(cfg_text)
    base = {"architectures": ["ViTForImageClassification"], "model_type": "vit"}
    put(d, "minimal", json.dumps(base))
    put(d, "deit-multilabel", json.dumps(dict(base, model_type="deit", num_labels=3,
                                              problem_type="multi_label_classification",
                                              hidden_act="gelu_new", image_size=[64, 32],
                                              patch_size=[16, 16])))
    put(d, "one-label-regression", json.dumps(dict(base, num_labels=1, problem_type="regression",
                                                   hidden_act="quick_gelu", qkv_bias=False,
                                                   layer_norm_eps=1e-6)))
    put(d, "bad-heads", json.dumps(dict(cfg, num_attention_heads=5)))
    put(d, "sparse-labels", json.dumps(dict(base, id2label={"0": "a", "2": "c"})))
    put(d, "float-sizes", json.dumps(dict(base, hidden_size=48.0, num_attention_heads=3,
                                          image_size=32, patch_size=8)))
    d = reset("preproc_config")
    put(d, "fixture", pp_text)
    put(d, "legacy-extractor", json.dumps({
        "feature_extractor_type": "ViTFeatureExtractor", "do_resize": True, "size": 224,
        "resample": 3, "do_normalize": True, "image_mean": 0.45, "image_std": [0.2, 0.3, 0.4]}))
    put(d, "pair-size-noresize", json.dumps({"size": [32, 32], "do_resize": False,
                                             "do_rescale": False, "do_normalize": False}))
    put(d, "shortest-edge", json.dumps({"size": {"shortest_edge": 224}}))
    put(d, "center-crop", json.dumps({"do_center_crop": True, "crop_size": 224}))
    put(d, "big-mean", '{"image_mean": [1e30, 0.5, 0.5], "image_std": 1e-30}')
    put(d, "empty", "{}")


def multipart():
    d = reset("multipart")
    png = open(os.path.join(CORPUS, "image", sorted(
        f for f in os.listdir(os.path.join(CORPUS, "image")) if f.startswith("seed-png-valid"))[0]),
        "rb").read()[:200]

    def body(bnd, parts, nl=b"\r\n", preamble=b"", epilogue=b""):
        out = preamble
        for headers, data in parts:
            out += b"--" + bnd + nl + nl.join(headers) + nl + nl + data + nl
        return out + b"--" + bnd + b"--" + nl + epilogue

    ct = b"multipart/form-data; boundary="
    b1 = b"------------------------d74496d66958873e"
    put(d, "curl", ct + b1 + b"\n" + body(b1, [(
        [b'Content-Disposition: form-data; name="file"; filename="cat.png"',
         b"Content-Type: image/png"], png)]))
    b2 = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    put(d, "browser-two-fields", b'multipart/form-data; boundary="' + b2 + b'"\n' + body(b2, [
        ([b'Content-Disposition: form-data; name="top_k"'], b"5"),
        ([b"content-disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.png",
          b"Content-Type: application/octet-stream"], png)], preamble=b"preamble\r\n",
        epilogue=b"epilogue"))
    b3 = b"xyz"
    put(d, "lf-only", ct + b3 + b"\n" + body(b3, [([b'Content-Disposition: form-data; name="a"'],
                                                  b"--xyzz\n--xy\r\n--xyz-"),
                                                 ([b'Content-Disposition: form-data; name=b'], b"")],
                                         nl=b"\n"))
    put(d, "no-close", ct + b"q\n--q\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\ndata")
    put(d, "no-disposition", ct + b"q\n--q\r\nContent-Type: text/plain\r\n\r\nx\r\n--q--\r\n")
    put(d, "five-parts", ct + b"p\n" + body(b"p", [([b'Content-Disposition: form-data; name="%d"' % i],
                                                   b"v") for i in range(5)]))
    put(d, "not-form", b"multipart/mixed; boundary=a\n--a\r\n\r\n--a--\r\n")
    put(d, "long-boundary", ct + b"x" * 71 + b"\n--" + b"x" * 71 + b"--\r\n")


def hub_id():
    d = reset("hub_id")
    for name, text in [("plain", "google/vit-base-patch16-224"),
                       ("branch", "google/vit-base-patch16-224@main"),
                       ("commit", "org/name@4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b"),
                       ("noorg-pr", "vit-tiny@refs/pr/1"), ("traversal", "../../etc/passwd"),
                       ("rev-traversal", "a/b@../../x"), ("double-dash", "org/na--me"),
                       ("abs-path", "/abs/path/model")]:
        put(d, name, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("VS_SHARED", "/work/shared"))
    a = ap.parse_args()
    chosen = images(a.shared)
    preprocess(chosen)
    exif(a.shared)
    safetensors()
    st_index()
    configs(a.shared)
    multipart()
    hub_id()
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(CORPUS, "*", "*")))
    print("corpus: %d files, %d bytes" % (len(glob.glob(os.path.join(CORPUS, "*", "*"))), total))


if __name__ == "__main__":
    main()
