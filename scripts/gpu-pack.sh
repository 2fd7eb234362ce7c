#!/usr/bin/env bash
# gpu-pack.sh: builds the CUDA variant HERE (a machine with nvcc but no GPU)
# and packs into .gpu/ everything a bare CUDA machine needs to run
# scripts/gpu-check.sh: the binaries, the shared libraries they need that a
# CUDA image lacks (oneDNN, jansson, libmicrohttpd, codecs, curl, cmocka ...),
# the hf-reference fixture and the check script.  Not packed: glibc, libcuda
# (the driver) and the CUDA toolkit's own libraries (cudart, cuBLAS, cuBLASLt:
# too big, and present on the device; gpu-check.sh finds them).
# libstdc++/libgcc_s go to .gpu/lib/compat, used only if the device's are
# missing or too old.
#
#   scripts/gpu-pack.sh [BUILD_DIR]      default build/gpu; run from anywhere
# Then, on the device, from the repository root:  bash scripts/gpu-check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build/gpu}"
PACK="$ROOT/.gpu"
SHARED="${VS_SHARED:-$ROOT/../shared}"
JOBS="${JOBS:-2}"

echo "gpu-pack: configuring $BUILD (CUDA on, sm_90, Release)"
cmake -S "$ROOT" -B "$BUILD" -DVS_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_BUILD_TYPE=Release -DVS_SHARED_DIR="$SHARED" >"$BUILD.configure.log" 2>&1 \
  || { tail -30 "$BUILD.configure.log"; echo "gpu-pack: configure failed"; exit 1; }

# Required: the backend's own test and benchmark.  Optional: the rest
# (written by others; a broken one must not stop the GPU run).
required=(test_model_cuda vs-bench_cuda)
optional=(vitserve vs-gen_vit vs-loadgen test_model_parity test_model_forward vs-bench_cpu)
for t in "${required[@]}"; do
  echo "gpu-pack: building $t"
  cmake --build "$BUILD" --target "$t" -j"$JOBS" >"$BUILD.build-$t.log" 2>&1 \
    || { tail -40 "$BUILD.build-$t.log"; echo "gpu-pack: $t failed to build"; exit 1; }
done
built=("${required[@]}")
targets="$(cmake --build "$BUILD" --target help 2>/dev/null || true)"
for t in "${optional[@]}"; do
  if grep -qx "\.\.\. $t" <<<"$targets"; then
    echo "gpu-pack: building $t (optional)"
    if cmake --build "$BUILD" --target "$t" -j"$JOBS" >"$BUILD.build-$t.log" 2>&1; then
      built+=("$t")
    else
      echo "gpu-pack: WARNING: $t failed to build (see $BUILD.build-$t.log); not packed"
    fi
  fi
done

rm -rf "$PACK"
mkdir -p "$PACK/bin" "$PACK/lib/compat" "$PACK/shared/fixtures"
for t in "${built[@]}"; do
  f=$(find "$BUILD" -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "gpu-pack: WARNING: no binary for $t"; continue; }
  cp "$f" "$PACK/bin/"
  strip --strip-unneeded "$PACK/bin/$t" 2>/dev/null || true
done

# The CUDA backend plugin (dlopen'ed from the executable's folder).
cp "$BUILD/src/libvitserve_cuda.so" "$PACK/bin/" \
  || { echo "gpu-pack: libvitserve_cuda.so missing"; exit 1; }

# Shared libraries: everything ldd resolves, minus glibc, the driver and the
# CUDA toolkit; libstdc++/libgcc_s into compat/.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libutil\.so|libanl|libnss_|libcuda\.so|libcudart|libcublas|libcublasLt|libnvidia)'
for b in "$PACK"/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
  if [[ "$name" =~ $skip ]]; then continue; fi
  if [[ "$name" =~ ^(libstdc\+\+|libgcc_s) ]]; then
    cp -L "$path" "$PACK/lib/compat/$name"
  else
    cp -L "$path" "$PACK/lib/$name"
  fi
done

cp -r "$SHARED/fixtures/hf-reference" "$PACK/shared/fixtures/"
# A 224x224 photo for the HTTP load test (decoding costs what a client's
# pre-resized upload costs); made from the fixture photo with our own resize.
if [ -x "$BUILD/tools/vs-resize" ] || cmake --build "$BUILD" --target vs-resize -j"$JOBS" >/dev/null 2>&1; then
  /usr/bin/python3 - "$SHARED/fixtures/hf-reference/images/a17_retina_1200x900.jpg" "$PACK/load-224.jpg" <<'PY' || true
import sys
from PIL import Image
Image.open(sys.argv[1]).convert("RGB").resize((224, 224), Image.BILINEAR).save(sys.argv[2], quality=90)
PY
fi
cp "$ROOT/scripts/gpu-check.sh" "$PACK/"
git -C "$ROOT" log -1 --format='%H %s' >"$PACK/commit.txt" 2>/dev/null || true
git -C "$ROOT" status --short >>"$PACK/commit.txt" 2>/dev/null || true

echo "gpu-pack: packed ${built[*]}"
echo "gpu-pack: libraries: $(ls "$PACK/lib" | grep -v compat | tr '\n' ' ')"
total=$(du -sb "$PACK" | cut -f1)
echo "gpu-pack: total $(du -sh "$PACK" | cut -f1) ($total bytes) in $PACK"
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "gpu-pack: WARNING: over the 64 MiB carry limit"
  exit 1
fi
