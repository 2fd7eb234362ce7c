/* cpu_backend.h: introspection of the CPU backend's context, for the
 * benchmark tool and tests (the vs_backend_ops table itself is declared in
 * backend.h).  Private to src/model/ and tools/bench_cpu.c.
 *
 * Threads: call between forwards, from the thread that calls forward().
 */
#ifndef VS_MODEL_CPU_BACKEND_H
#define VS_MODEL_CPU_BACKEND_H

#include <stdint.h>
#include <stdbool.h>

struct vs_cpu_stats {
    uint64_t forwards;       /* forward() calls since the last reset */
    uint64_t images;         /* images through them */
    uint64_t total_ns;       /* wall time inside forward() */
    uint64_t gemm_ns;        /* of which inside oneDNN matmul primitives */
    uint64_t plan_ns;        /* of which building primitives (first call per n) */
    uint64_t attn_ns;        /* of which attention: Q K^T, softmax, S V (all heads) */
    int threads;             /* OpenMP threads used per forward */
    const char *kernels;     /* "avx2" / "generic": the row kernels in use */
    const char *dnnl_isa;    /* what oneDNN dispatches to ("avx2", "avx512_core_vnni"...) */
    int weight_qmax;         /* int8: largest |q| of the weights (127, or 63 without VNNI) */
    char impl[512];          /* oneDNN implementation of each GEMM of the last plan */
};

/* Copies the counters of ctx (a vs_backend_cpu context) into *out and,
 * when reset, zeroes them. */
void vs_model_cpu_stats(void *ctx, struct vs_cpu_stats *out, bool reset);

#endif
