"""test_resample_pillow: vs-resize (vs_image_resize) against Pillow 9.4's
Image.resize, byte for byte.

For all six filters (NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING) and a
grid of sizes (downscale by integer and non-integer factors, upscale,
1-pixel sources and targets, odd sizes, extreme aspect ratios, identity, one
dimension unchanged, one shrunk while the other grows), each size is run on
a random image (fixed seed) and on a structured one (gradients,
checkerboards, single bright/dark pixels); the structured runs alternate
between the AVX2 path and the portable one (VS_RESAMPLE_NO_SIMD=1), and every
third size also runs the random image through the portable path.
The reference is PIL.Image.frombytes(...).resize((dw, dh), resample=f).
Also: the tool's error contract (unknown filter, short input, usage).
Needs Pillow + numpy (Debian's /usr/bin/python3).
"""
import os
import subprocess
import sys

try:
    import numpy as np
    from PIL import Image
except ImportError:
    # ctest may have found another python3 first; Debian's has PIL 9.4.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    print("SKIP: needs PIL and numpy")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vstest  # noqa: E402
from vstest import check, done, skip  # noqa: E402

if not Image.__version__.startswith("9.4"):
    skip(f"reference is Pillow 9.4, found {Image.__version__}")

RESIZE = vstest.tool("resize")
if not os.path.exists(RESIZE):
    skip(f"{RESIZE} not built")

FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}

# (sw, sh, dw, dh)
SIZES = [
    # downscale: integer and non-integer factors
    (64, 48, 32, 32), (100, 100, 37, 53), (300, 200, 150, 100), (301, 199, 100, 66),
    (255, 255, 16, 16), (97, 89, 10, 9), (64, 64, 21, 21), (640, 480, 224, 224),
    (1920, 1080, 224, 224),
    # upscale
    (10, 7, 31, 29), (5, 3, 32, 32), (2, 2, 7, 5), (16, 16, 224, 224), (3, 5, 32, 32),
    # 1-pixel sources and targets
    (1, 1, 32, 32), (37, 23, 1, 1), (50, 1, 7, 1), (1, 50, 1, 7), (1, 40, 9, 13),
    (40, 1, 13, 9), (1, 1, 1, 5),
    # odd sizes, mixed directions
    (33, 17, 19, 31), (13, 101, 47, 3), (100, 20, 30, 60),
    # extreme aspect ratios
    (1000, 7, 32, 32), (3000, 2, 224, 224), (2, 3000, 224, 224), (7, 1000, 32, 32),
    # identity, one dimension unchanged
    (32, 32, 32, 32), (19, 11, 19, 11), (50, 40, 50, 20), (50, 40, 20, 40),
    (40, 50, 40, 77), (40, 50, 97, 50),
]

rng = np.random.default_rng(20261127)


def random_image(w, h):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def structured_image(w, h, kind):
    y, x = np.mgrid[0:h, 0:w]
    if kind == 0:       # gradients, a different one per channel
        r = (x * 255 // max(w - 1, 1))
        g = (y * 255 // max(h - 1, 1))
        b = ((x + y) * 255 // max(w + h - 2, 1))
        a = np.stack([r, g, b], axis=-1)
    elif kind == 1:     # 1-pixel checkerboard (worst case for ringing)
        a = np.repeat((((x + y) & 1) * 255)[..., None], 3, axis=-1)
    elif kind == 2:     # 3-pixel checkerboard, coloured
        c = ((x // 3 + y // 3) & 1)
        a = np.stack([c * 255, (1 - c) * 200, c * 30 + 100], axis=-1)
    elif kind == 3:     # single bright pixel on black
        a = np.zeros((h, w, 3), dtype=np.int64)
        a[h // 2, w // 3] = (255, 255, 255)
    else:               # single dark pixel on white, plus a red stripe
        a = np.full((h, w, 3), 255, dtype=np.int64)
        a[h // 3, w // 2] = (0, 0, 0)
        a[:, (w - 1) // 2, 1:] = 0
    return a.astype(np.uint8)


def resize_tool(img, f, dw, dh, env=None):
    h, w, _ = img.shape
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([RESIZE, str(f), str(w), str(h), str(dw), str(dh)],
                       input=img.tobytes(), capture_output=True, timeout=120, env=e)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def compare(img, f, dw, dh, what, env=None):
    h, w, _ = img.shape
    want = Image.frombytes("RGB", (w, h), img.tobytes()).resize((dw, dh), resample=f).tobytes()
    code, got, err = resize_tool(img, f, dw, dh, env)
    check(code == 0, f"{what}: vs-resize exit {code}: {err}")
    if got != want:
        g = np.frombuffer(got, np.uint8).astype(int)
        ww = np.frombuffer(want, np.uint8).astype(int)
        detail = (f"{(g != ww).sum()} of {ww.size} bytes differ, max |d| {np.abs(g - ww).max()}"
                  if g.size == ww.size else f"{g.size} bytes, Pillow {ww.size}")
        check(False, f"{what}: differs from Pillow: {detail}")
    check(True, what)


PORTABLE = {"VS_RESAMPLE_NO_SIMD": "1"}
cases = 0
for i, (sw, sh, dw, dh) in enumerate(SIZES):
    rnd = random_image(sw, sh)
    for f, name in FILTERS.items():
        what = f"{name} {sw}x{sh} -> {dw}x{dh}"
        compare(rnd, f, dw, dh, what + " (random)")
        # structured images alternate between the AVX2 and portable paths
        kind = (i + f) % 5
        portable = (i + f) % 2 == 1
        compare(structured_image(sw, sh, kind), f, dw, dh,
                what + f" (pattern {kind}{', portable path' if portable else ''})",
                PORTABLE if portable else None)
        cases += 2
        # and every third size runs the random image through both paths
        if i % 3 == 0 and f != 0:
            compare(rnd, f, dw, dh, what + " (random, portable path)", PORTABLE)
            cases += 1

# The tool's error contract: exit 1 and a message, nothing on stdout.
img = random_image(4, 4)
code, out, err = resize_tool(img, 6, 2, 2)
check(code == 1 and not out and "filter" in err, f"filter 6 must be refused: {code} {err!r}")
code, out, err = resize_tool(img, 2, 5, 5)   # a valid call, for contrast
check(code == 0 and len(out) == 75, f"4x4 -> 5x5: exit {code} {len(out)} bytes")
p = subprocess.run([RESIZE, "2", "10", "10", "5", "5"], input=b"\0" * 299, capture_output=True)
check(p.returncode == 1 and not p.stdout and b"fewer" in p.stderr,
      f"short input must be refused: {p.returncode} {p.stderr!r}")
p = subprocess.run([RESIZE, "2", "10", "0", "5", "5"], input=b"", capture_output=True)
check(p.returncode == 1 and p.stderr, f"size 0 must be refused: {p.returncode}")
p = subprocess.run([RESIZE, "bilinear"], input=b"", capture_output=True)
check(p.returncode == 1 and b"usage" in p.stderr, f"usage error: {p.returncode}")

print(f"{cases} resize cases identical to Pillow {Image.__version__} "
      f"({len(SIZES)} sizes x {len(FILTERS)} filters, random + structured inputs, "
      f"AVX2 and portable paths)")
done()
