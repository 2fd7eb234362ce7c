#!/usr/bin/env bash
# gpu-check.sh: the one-shot GPU check.  Runs ON the lent GPU machine, from
# the repository root, with .gpu/ made by scripts/gpu-pack.sh.  Writes
# everything to $OUT/gpu.log (and bench JSON to $OUT/bench*.jsonl), prints a
# summary at the end.  Every step has a hard timeout so one hang cannot eat
# the lease; the whole script targets < 4 minutes.
#
#   OUT=/some/dir bash scripts/gpu-check.sh [--quick | --serve | --cpu]
# --quick: the CUDA test + a short fp16/bf16 benchmark and profile only.
# --serve: the CUDA tests, `vitserve bench` on a generated ViT-B/16 and the
#          HTTP load test against `vitserve serve --device cuda`, then
#          bench/gpu_torch.py: PyTorch + transformers on the same card, same
#          weights, same input (docs/gpu.md).
# --cpu:   no GPU work: the host CPU (a Xeon with AVX-512 on the lent
#          machines) runs test_model_forward, which checks the own GEMM's
#          AVX-512 kernel bit for bit against the AVX2 one, then times it
#          against oneDNN and against the AVX2 kernel (vs-bench_cpu --ab,
#          --ab-avx2, --gemm-api) on 2 pinned cores and on all of them
#          (docs/forward.md, "The AVX-512 kernel").  About 3 minutes.
set -u
ROOT="$(pwd)"
G="$ROOT/.gpu"
OUT="${OUT:-/tmp/gpu-check-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
SERVE=0; [ "${1:-}" = "--serve" ] && SERVE=1
CPU=0; [ "${1:-}" = "--cpu" ] && CPU=1
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
export VS_SHARED="$G/shared" VS_TMP="$OUT/tmp" VS_TOOLS="$G/bin"
mkdir -p "$VS_TMP"

# --- --cpu: the host CPU, the own GEMM's AVX-512 kernel against oneDNN --------
if [ $CPU -eq 1 ]; then
  echo; echo "=== cpu"
  grep -m1 "model name" /proc/cpuinfo
  grep -m1 -o -E "avx512f|avx512_vnni|amx_tile" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  BC="$G/bin/vs-bench_cpu"
  export OMP_WAIT_POLICY=PASSIVE
  step "test_model_forward" 180 "$G/bin/test_model_forward"
  step "ab own vs oneDNN, 2 cores" 120 taskset -c 0,1 "$BC" --ab --batch 1 --iters 8 --threads 2
  step "ab own vs own-avx2, 2 cores" 120 taskset -c 0,1 "$BC" --ab-avx2 --batch 1 --iters 8 --threads 2
  step "ab own vs oneDNN, 2 cores, b8" 120 taskset -c 0,1 "$BC" --ab --batch 8 --iters 2 --threads 2
  step "gemm shapes, 2 cores" 120 taskset -c 0,1 "$BC" --gemm-api --layers 1 --iters 10 --threads 2
  step "ab own vs oneDNN, all cores" 120 "$BC" --ab --batch 1 --iters 8
  echo; echo "================ SUMMARY ($(($(date +%s) - T_START)) s) ================"
  for s in "${SUMMARY[@]}"; do echo "  $s"; done
  grep -E "own GEMM on its|GEMM cases|same bits|FAILED|PASSED" "$LOG" | sort -u
  grep -E "^  (own|oneDNN)|/ own:|GFLOP/s|peak" "$LOG" | head -60
  echo "log: $LOG"
  sleep 1
  exit 0
fi

# --- --serve: the engine and the HTTP server with dynamic batching on the GPU --
if [ $SERVE -eq 1 ]; then
  V="$G/bin/vitserve"
  step "test_model_cuda" 120 "$G/bin/test_model_cuda"
  step "test_model_parity" 60 "$G/bin/test_model_parity"
  step "gen vit-b/16" 60 "$G/bin/vs-gen_vit" --out /tmp/vitb --preset base --seed 1
  for p in fp16 bf16 fp32; do
    step "engine $p b128" 60 "$V" bench --model /tmp/vitb --device cuda --precision $p --batch-size 128 --iters 20 --json
  done
  step "engine fp16 b1" 60 "$V" bench --model /tmp/vitb --device cuda --precision fp16 --batch-size 1 --iters 200 --json
  get() { python3 -c "import sys,urllib.request as u
try: r=u.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())
except Exception as e: print('ERR', getattr(e, 'code', ''), getattr(e, 'read', lambda: b'')().decode() if hasattr(e,'read') else e)" "$1"; }
  # the third run: a thread per connection (--http-threads 0), against the
  # default pool with offloading (session 7) on the same settings
  for conf in "fp16 128 2" "fp16 256 4" "fp16 128 2 0"; do
    set -- $conf
    HT=(); [ -n "${4:-}" ] && HT=(--http-threads "$4")
    "$V" serve --model /tmp/vitb --device cuda --precision "$1" --max-batch "$2" --batch-timeout-ms "$3" \
         --cache-entries 0 --max-queue 8192 --host 127.0.0.1 --port 18080 --log-level warn "${HT[@]}" \
         >"$OUT/serve-$1-$2${4:+-ht$4}.log" 2>&1 &
    SPID=$!
    for i in $(seq 1 100); do get http://127.0.0.1:18080/health/ready 2>/dev/null | grep -q '^200' && break; sleep 0.2; done
    step "health ($1, max-batch $2)" 10 bash -c "$(declare -f get); get http://127.0.0.1:18080/health"
    for c in 256 1024; do
      step "http $1 mb$2${4:+ ht$4} c$c distinct" 40 "$G/bin/vs-loadgen" --port 18080 --file "$G/load-224.jpg" \
           --concurrency $c --seconds 8 --warmup 2 --distinct
    done
    step "metrics ($1)" 10 bash -c "$(declare -f get); get http://127.0.0.1:18080/metrics | grep -E '^(gpu_|batch_size_(sum|count)|queue_wait_seconds_(sum|count)|inference_requests_total)'"
    kill -TERM $SPID; wait $SPID; echo "server exit $?"
    tail -5 "$OUT/serve-$1-$2${4:+-ht$4}.log"
  done
  # PyTorch + transformers on the same GPU, same weights, same input (bench/gpu_torch.py)
  step "torch side by side" 240 env PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu_torch.py" \
       --model /tmp/vitb --vitserve "$V" --batches 1,8,128 --iters 20 --json "$OUT/torch.jsonl"
  echo; echo "=== SUMMARY (serve)"; printf '%s\n' "${SUMMARY[@]}"
  exit 0
fi
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
