#!/usr/bin/env bash
# gpu-check.sh: the one-shot GPU check.  Runs ON the lent GPU machine, from
# the repository root, with .gpu/ made by scripts/gpu-pack.sh.  Writes
# everything to $OUT/gpu.log (and bench JSON to $OUT/bench*.jsonl), prints a
# summary at the end.  Every step has a hard timeout so one hang cannot eat
# the lease; the whole script targets < 4 minutes.
#
#   OUT=/some/dir bash scripts/gpu-check.sh [--quick]
# --quick: the CUDA test + a short fp16/bf16 benchmark and profile only.
set -u
ROOT="$(pwd)"
G="$ROOT/.gpu"
OUT="${OUT:-/tmp/gpu-check-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
T_START=$(date +%s)
SUMMARY=()

# step NAME LIMIT_S CMD...: runs CMD under timeout, logs rc and seconds.
step() {
  local name="$1" limit="$2"; shift 2
  echo; echo "=== [$name] (limit ${limit}s) $*"
  local t0=$(date +%s%N)
  timeout -k 5 "$limit" "$@"
  local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local dt="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
  local what="rc=$rc"
  [ $rc -eq 0 ] && what="ok"
  [ $rc -eq 77 ] && what="skipped(77)"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMEOUT(rc=$rc)"
  echo "=== [$name] $what in ${dt}s"
  SUMMARY+=("$(printf '%-28s %-16s %8ss' "$name" "$what" "$dt")")
  return $rc
}

echo "gpu-check: $(date -u) on $(hostname)"
[ -d "$G/bin" ] || { echo "gpu-check: $G/bin missing: run scripts/gpu-pack.sh first and carry .gpu"; exit 1; }
cat "$G/commit.txt" 2>/dev/null | head -3

step "nvidia-smi" 30 nvidia-smi
step "gpu query" 30 nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,memory.used,clocks.max.sm,clocks.max.mem,power.limit,pstate --format=csv
echo; echo "=== environment"
uname -a; grep PRETTY /etc/os-release 2>/dev/null; nproc; free -g | head -2
ldd --version 2>&1 | head -1
ls -d /usr/local/cuda* 2>/dev/null
env | grep -E '^(CUDA|NVIDIA|LD_LIBRARY_PATH|PATH)' | sort

# --- the CUDA runtime + cuBLAS: toolkit dirs, system dirs, pip wheels ------
echo; echo "=== locating libcudart / libcublas / libcublasLt"
need=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13)
dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib \
         /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib; do
  [ -d "$d" ] && dirs+=("$d")
done
for py in python3 python; do
  command -v $py >/dev/null || continue
  for sp in $($py -c 'import site,sys; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null); do
    for d in "$sp"/nvidia/*/lib; do [ -d "$d" ] && dirs+=("$d"); done
  done
done
libpath=""
for lib in "${need[@]}"; do
  found=""
  for d in "${dirs[@]}"; do
    if [ -e "$d/$lib" ]; then found="$d"; break; fi
  done
  if [ -z "$found" ]; then
    found=$(find / -xdev -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -1 | xargs -r dirname)
  fi
  echo "  $lib: ${found:-NOT FOUND}"
  if [ -n "$found" ] && [[ ":$libpath:" != *":$found:"* ]]; then libpath="$libpath:$found"; fi
done
export LD_LIBRARY_PATH="$G/lib${libpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# our libstdc++/libgcc_s only when the system's are missing or too old
if ldd "$G/bin/test_model_cuda" 2>&1 | grep -qE "libstdc\+\+.*not found|GLIBCXX|GCC_[0-9].*not found"; then
  echo "  using packed libstdc++/libgcc_s (.gpu/lib/compat)"
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$G/lib/compat"
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for b in "$G"/bin/*; do
  echo "--- ldd $(basename "$b")"
  ldd "$b" 2>&1 | grep -E "not found|cuda|cublas|dnnl|stdc|version" || true
done

# --- correctness ---------------------------------------------------------------
export VS_SHARED="$G/shared" VS_TMP="$OUT/tmp"
mkdir -p "$VS_TMP"
step "test_model_cuda" 240 env VS_CUDA_DEBUG=1 "$G/bin/test_model_cuda"
for t in test_model_parity test_model_forward; do
  [ -x "$G/bin/$t" ] && [ $QUICK -eq 0 ] && step "$t" 120 "$G/bin/$t"
done

# --- engine benchmark (ours: the backend alone, random ViT-B/16 weights) --------
B="$G/bin/vs-bench_cuda"
if [ $QUICK -eq 1 ]; then
  step "bench quick" 60 "$B" --preset base --precision fp16,bf16 --batch 1,8,32,128 --iters 20 --seconds 4
  step "bench quick chunk 16" 60 "$B" --preset base --precision fp16 --batch 32,128 --iters 15 --seconds 4 --chunk 16
  step "profile fp16" 60 env VS_CUDA_PROFILE=1 "$B" --preset base --precision fp16 --batch 128 --iters 3 --warmup 0 --seconds 4
else
  step "bench (chunk default)" 150 "$B" --preset base --precision fp32,fp16,bf16 \
       --batch 1,8,32,128 --iters 30 --seconds 6
  step "bench json" 120 sh -c "'$B' --preset base --precision fp16,bf16 --batch 1,128 --iters 30 --seconds 6 --json > '$OUT/bench.jsonl'"
  cat "$OUT/bench.jsonl" 2>/dev/null
  step "bench chunk 128" 60 "$B" --preset base --precision fp16 --batch 128 --iters 15 --seconds 4 --chunk 128
  step "bench chunk 64" 60 "$B" --preset base --precision fp16 --batch 128 --iters 15 --seconds 4 --chunk 64
  step "bench chunk 16" 60 "$B" --preset base --precision fp16 --batch 128 --iters 15 --seconds 4 --chunk 16
  step "bench fused attention" 60 env VS_CUDA_FUSED_ATTN=1 "$B" --preset base --precision fp16 --batch 1,128 --iters 15 --seconds 4
  step "profile fp16" 60 env VS_CUDA_PROFILE=1 "$B" --preset base --precision fp16 --batch 128 --iters 3 --warmup 0 --seconds 4
  step "profile fp32" 60 env VS_CUDA_PROFILE=1 "$B" --preset base --precision fp32 --batch 32 --iters 2 --warmup 0 --seconds 4
  step "bench no graphs" 60 env VS_CUDA_GRAPHS=0 "$B" --preset base --precision fp16 --batch 1,8 --iters 30 --seconds 5
fi

# --- the whole binary, if it was built: vitserve bench on a generated ViT-B -----
if [ $QUICK -eq 0 ] && [ -x "$G/bin/vitserve" ] && [ -x "$G/bin/vs-gen_vit" ]; then
  step "gen_vit base" 120 "$G/bin/vs-gen_vit" --out /tmp/vitb --preset base
  for p in fp16 fp32; do
    for bs in 1 128; do
      step "vitserve bench $p b$bs" 60 sh -c "'$G/bin/vitserve' bench --model /tmp/vitb --device cuda --precision $p --batch-size $bs --iters 20 --warmup 3 --json >> '$OUT/vitserve-bench.jsonl'"
    done
  done
  cat "$OUT/vitserve-bench.jsonl" 2>/dev/null
fi

step "nvidia-smi (after)" 30 nvidia-smi --query-gpu=name,memory.used,memory.total,temperature.gpu,clocks.sm --format=csv

echo; echo "================ SUMMARY ($(($(date +%s) - T_START)) s) ================"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
for s in "${SUMMARY[@]}"; do echo "  $s"; done
echo "--- accuracy (test_model_cuda)"
grep -E "^\[ cuda|FAILED|PASSED|OK \]" "$LOG" | grep -vE "^=== " | sort -u | head -40
echo "--- engine benchmark"
grep -E "GFLOP/image|batch +[0-9]+:" "$LOG" | head -40
echo "--- profile"
grep -E "^vs-cuda profile|^  [a-zA-Z].* ms/image" "$LOG" | head -30
echo "log: $LOG"
sleep 1   # let tee drain into the log
