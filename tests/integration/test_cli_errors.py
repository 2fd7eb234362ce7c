"""CLI contract: exit statuses, error messages that name the file and the
problem, failing images reported in place while the others still run,
stdin input, --help and --version."""
import json
import os
import shutil

from vstest import FIXTURE, SHARED, TMP, check, done, json_lines, vitserve

MODEL = os.path.join(FIXTURE, "model")
IMG = os.path.join(FIXTURE, "images", "a05_gradient_rgb.png")

code, out, _ = vitserve("--version")
check(code == 0 and out.startswith("vitserve "), f"--version: {code} {out!r}")
for cmd in ("classify", "inspect", "preprocess", "info", "bench", "serve"):
    code, out, err = vitserve(cmd, "--help")
    check(code == 0 and "usage: vitserve " + cmd in out, f"{cmd} --help: {code} {err}")
# --help works in a misconfigured environment; without it the bad value is
# a usage error naming its variable.
for var, val in (("PORT", "abc"), ("VITSERVE_MAX_BATCH", "zz")):
    code, out, err = vitserve("serve", "--help", env={var: val})
    check(code == 0 and "usage: vitserve serve" in out, f"serve --help with ${var}={val}: {code} {err}")
    code, out, err = vitserve("serve", "--model", MODEL, env={var: val}, timeout=60)
    check(code == 2 and var in err and val in err, f"serve with ${var}={val}: {code} {err}")
code, _, err = vitserve("frobnicate")
check(code == 2 and "unknown command" in err, f"unknown command: {code} {err}")
code, _, err = vitserve("classify", "--model", MODEL, "--top-k", "zero", IMG)
check(code == 2 and "--top-k" in err, f"bad --top-k: {code} {err}")
for bad_size in ("nan", "-1", "-nan", "12q"):
    code, _, err = vitserve("classify", "--model", MODEL, "--max-pixels", bad_size, IMG)
    check(code == 2 and "--max-pixels" in err, f"--max-pixels {bad_size}: {code} {err}")
code, _, err = vitserve("classify", "--model", MODEL, "--no-such-flag", IMG)
check(code == 2 and "--no-such-flag" in err, f"unknown flag: {code} {err}")
code, _, err = vitserve("classify", "--model", MODEL)
check(code == 2 and "no image" in err, f"no image: {code} {err}")
# A --device that does not parse is a usage error (2) in every command that
# computes, before any model is loaded (it used to exit 1, as a load failure).
for cmd, extra in (("classify", (IMG,)), ("bench", ("--iters", "1")), ("serve", ("--port", "0"))):
    for dev in ("cuda:x", "gpu"):
        code, _, err = vitserve(cmd, "--model", MODEL, "--device", dev, *extra, timeout=60)
        check(code == 2 and "--device" in err and dev in err, f"{cmd} --device {dev}: {code} {err}")
code, out, _ = vitserve("classify", "--help")
check("1 to 64" in out, f"classify --help states --top-k's range: {out}")
code, _, err = vitserve("classify", "--model", MODEL, "--top-k", "65", IMG)
check(code == 2 and "--top-k" in err, f"--top-k 65: {code} {err}")

# A backend's refusal is named once ("cpu backend: precision fp16 ...").
code, _, err = vitserve("classify", "--model", MODEL, "--precision", "fp16", "--device", "cpu", IMG)
check(code == 1 and "fp16" in err and err.count("cpu backend") == 1, f"fp16 on the CPU: {code} {err}")

# A missing model names where it looked.
empty_cache = os.path.join(TMP, "empty-hf-cache")
os.makedirs(empty_cache, exist_ok=True)
code, _, err = vitserve("classify", "--model", "nobody/no-such-vit", IMG,
                        env={"HF_HUB_CACHE": empty_cache, "HF_HUB_OFFLINE": "1"})
check(code == 1 and empty_cache in err, f"missing model: {code} {err}")

# One bad image among good ones: reported in place, the rest classified, exit 1.
bad = os.path.join(TMP, "not-an-image.jpg")
with open(bad, "wb") as f:
    f.write(b"this is plain text, not a JPEG\n")
trunc = os.path.join(TMP, "truncated.png")
with open(IMG, "rb") as f:
    data = f.read()
with open(trunc, "wb") as f:
    f.write(data[: len(data) // 2])
code, out, err = vitserve("classify", "--model", MODEL, "--json", IMG, bad, trunc, IMG)
rows = json_lines(out)
check(code == 1, f"exit status with failing images: {code}")
check(len(rows) == 4, f"4 lines expected, got {out!r}")
check("predictions" in rows[0] and "predictions" in rows[3], f"good images classified: {rows}")
check(rows[0]["predictions"] == rows[3]["predictions"], "same image, same answer")
check("error" in rows[1] and rows[1]["file"] == bad, f"bad image reported: {rows[1]}")
check("error" in rows[2] and rows[2]["file"] == trunc, f"truncated image reported: {rows[2]}")
check("2 of 4" in err, f"summary on stderr: {err!r}")
# inspect's failing line: file, error and status, as its --help says.
code, out, _ = vitserve("inspect", bad)
irow = json_lines(out)[0] if code == 1 else {}
check(irow.get("file") == bad and irow.get("error") and irow.get("status") == "UNSUPPORTED",
      f"inspect error line: {code} {out!r}")
code, out, _ = vitserve("inspect", "--help")
check("(or file, error, status)" in out, f"inspect --help names the error fields: {out}")

# A file name that is not UTF-8 is still named in the JSON line (U+FFFD for
# the bad byte), as is its error.
odd = os.path.join(os.fsencode(TMP), b"odd-\xff-name.jpg")
with open(odd, "wb") as f:
    f.write(b"not an image either\n")
for cmd in ("classify", "inspect"):
    extra = ("--model", MODEL, "--json") if cmd == "classify" else ()
    code, out, err = vitserve(cmd, *extra, os.fsdecode(odd))
    orows = json_lines(out)
    check(code == 1 and len(orows) == 1 and orows[0].get("file", "").endswith("odd-\ufffd-name.jpg")
          and orows[0].get("error"), f"{cmd}: non-UTF-8 file name: {code} {out!r} {err}")

# stdin.
code, out, err = vitserve("classify", "--model", MODEL, "--json", "-", stdin=data)
check(code == 0, f"stdin: {code} {err}")
row = json_lines(out)[0]
check(row["predictions"] == rows[0]["predictions"], "stdin gives the same answer as the file")

# Text output names the file and the labels.
code, out, err = vitserve("classify", "--model", MODEL, "--top-k", "3", IMG)
check(code == 0 and out.startswith(IMG) and len(out.strip().splitlines()) == 4, f"text output {out!r}")

# Broken checkpoints: a non-zero exit naming the file and the problem.
def broken_copy(name):
    d = os.path.join(TMP, "broken-" + name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(MODEL, d)
    return d

# No preprocessor_config.json (a cache that AutoModel filled alone): the
# defaults are used, and said so, on every command that loads the model.
code, out, err = vitserve("classify", "--model", MODEL, IMG)
check(code == 0 and "warning" not in err, f"no warning with a preprocessor_config.json: {err}")
d = broken_copy("no-preprocessor")
os.remove(os.path.join(d, "preprocessor_config.json"))
code, out, err = vitserve("classify", "--model", d, IMG)
check(code == 0 and "warning" in err and "preprocessor_config.json" in err and d in err,
      f"classify warns about the missing preprocessor_config.json: {code} {err}")
code, out, _ = vitserve("info", "--model", d, "--json")
check(code == 0 and json.loads(out)["preprocessor"]["defaults"] is True, f"info --json: defaults: {out}")
code, out, _ = vitserve("info", "--model", MODEL, "--json")
check(code == 0 and json.loads(out)["preprocessor"]["defaults"] is False, "info --json: from the file")

# An index far larger than any checkpoint needs is refused before jansson
# reads it (it spends ~10x the file's size in memory).
d = broken_copy("huge-index")
os.remove(os.path.join(d, "model.safetensors"))
with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    f.write('{"metadata": {}, "weight_map": {}}' + " " * (17 << 20))
code, _, err = vitserve("info", "--model", d)
check(code == 1 and "model.safetensors.index.json" in err and "limit" in err,
      f"17 MiB index refused: {code} {err}")
shutil.rmtree(d)

d = broken_copy("config")
cfg = json.load(open(os.path.join(d, "config.json")))
del cfg["architectures"]
cfg["model_type"] = "bert"
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
code, _, err = vitserve("classify", "--model", d, IMG)
check(code == 1 and "config.json" in err, f"unsupported config: {code} {err}")

d = broken_copy("syntax")
with open(os.path.join(d, "config.json"), "w") as f:
    f.write('{"hidden_size": 48,\n "oops" }')
code, _, err = vitserve("info", "--model", d)
check(code == 1 and "config.json" in err and "line" in err, f"JSON syntax error: {code} {err}")

d = broken_copy("header")
p = os.path.join(d, "model.safetensors")
raw = bytearray(open(p, "rb").read())
raw[0:8] = (len(raw) * 2).to_bytes(8, "little")
open(p, "wb").write(raw)
code, _, err = vitserve("classify", "--model", d, IMG)
check(code == 1 and "model.safetensors" in err, f"bad header length: {code} {err}")

d = broken_copy("truncated")
p = os.path.join(d, "model.safetensors")
raw = open(p, "rb").read()
open(p, "wb").write(raw[: len(raw) - 1000])
code, _, err = vitserve("classify", "--model", d, IMG)
check(code == 1 and "model.safetensors" in err, f"truncated weights: {code} {err}")

# inspect on the corpus' hostile files: never a crash (exit 0 or 1, JSON lines).
hostile = []
for sub in ("bombs", "garbage"):
    folder = os.path.join(SHARED, "images", sub)
    if os.path.isdir(folder):
        hostile += [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
code, out, err = vitserve("inspect", *hostile)
check(code in (0, 1), f"inspect on hostile files exited {code}: {err[-2000:]}")
rows = json_lines(out)
check(len(rows) == len(hostile), f"one line per hostile file ({len(rows)} vs {len(hostile)})")
# A preprocessor with "do_resize": false keeps the image's own size; one
# that is not the model's image_size is refused in place (it used to be
# written past the end of the batch tensor), a 32x32 image still runs.
noresize = os.path.join(TMP, "cli-noresize")
shutil.rmtree(noresize, ignore_errors=True)
shutil.copytree(MODEL, noresize)
pp = os.path.join(noresize, "preprocessor_config.json")
pcfg = json.load(open(pp))
pcfg["do_resize"] = False
json.dump(pcfg, open(pp, "w"))
big = os.path.join(FIXTURE, "images", "a02_coffee_progressive.jpg")   # 600x400
code, out, err = vitserve("classify", "--model", noresize, "--json", "--device", "cpu", big, IMG)
rows = json_lines(out) if code in (0, 1) else []
check(code == 1 and len(rows) == 2, f"do_resize false, wrong size: exit {code}, {out!r} {err[-1500:]}")
check(all("error" in r and "600x400" in r["error"] and "32x32" in r["error"] for r in rows[:1]),
      f"size mismatch named: {rows}")
check(len(rows) == 2 and "error" in rows[1] and "64x48" in rows[1]["error"], f"second image: {rows}")
small = os.path.join(TMP, "noresize-32.png")
from PIL import Image
Image.open(big).convert("RGB").resize((32, 32)).save(small)
code, out, err = vitserve("classify", "--model", noresize, "--json", "--device", "cpu", small)
check(code == 0 and "predictions" in json_lines(out)[0], f"32x32 with do_resize false: {code} {err}")
for cmd_args in (("preprocess", "-o", os.path.join(TMP, "noresize.f32")),
                 ("bench", "--iters", "1", "--image")):
    dev = ("--device", "cpu") if cmd_args[0] == "bench" else ()
    code, _, err = vitserve(*cmd_args[:1], "--model", noresize, *dev, *cmd_args[1:], big)
    check(code == 1 and "600x400" in err, f"{cmd_args[0]} with do_resize false: {code} {err[-1500:]}")
done()
