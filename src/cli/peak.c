/* peak.c: measures this machine's fp32 FMA peak, so that `vitserve bench`
 * can report "% of peak" for the CPU it runs on rather than for a CPU in a
 * design note.  Each thread runs independent chains of vector FMAs held in
 * registers (no memory traffic) for a fixed time; AVX-512 where the CPU has
 * it, else AVX2+FMA, else SSE multiply-add.  Main thread + helpers, once. */
#include "peak.h"

#include <pthread.h>
#include <stdint.h>

#include "common/vs.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define CHAINS 12

__attribute__((target("avx512f"))) static double run_avx512(double ms, uint64_t *iters)
{
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    uint64_t n = 0;
    double t0 = vs_now_ms();
    do {
        for (int r = 0; r < 256; r++)
            for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
        n += 256;
    } while (vs_now_ms() - t0 < ms);
    float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    *iters = n + (sink == 12345.0f);
    return 2.0 * 16 * CHAINS;   /* flops per (iteration x chain): 16 lanes, mul+add */
}

__attribute__((target("avx2,fma"))) static double run_avx2(double ms, uint64_t *iters)
{
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    uint64_t n = 0;
    double t0 = vs_now_ms();
    do {
        for (int r = 0; r < 256; r++)
            for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
        n += 256;
    } while (vs_now_ms() - t0 < ms);
    float lanes[8], sink = 0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        sink += lanes[0];
    }
    *iters = n + (sink == 12345.0f);
    return 2.0 * 8 * CHAINS;
}
#endif

struct worker {
    double ms, flops;
    const char *isa;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t iters = 0;
    double per = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        per = run_avx512(w->ms, &iters);
        w->isa = "AVX-512";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        per = run_avx2(w->ms, &iters);
        w->isa = "AVX2+FMA";
    }
#endif
    w->flops = per * (double)iters;
    return NULL;
}

double vs_peak_fp32_gflops(int threads, const char **isa)
{
    enum { MAX_T = 256 };
    if (threads < 1) threads = 1;
    if (threads > MAX_T) threads = MAX_T;
    struct worker w[MAX_T];
    pthread_t tid[MAX_T];
    const double ms = 150;
    for (int i = 0; i < threads; i++) w[i] = (struct worker){.ms = ms, .isa = "none"};
    double t0 = vs_now_ms();
    int started = 0;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&tid[i], NULL, work, &w[i]) == 0) started = i;
    work(&w[0]);
    double total = w[0].flops;
    for (int i = 1; i <= started; i++) {
        pthread_join(tid[i], NULL);
        total += w[i].flops;
    }
    double el = vs_now_ms() - t0;
    if (isa) *isa = w[0].isa;
    return total / (el / 1000.0) / 1e9;
}
