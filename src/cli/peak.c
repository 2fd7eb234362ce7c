/* peak.c: measures this machine's fp32 FMA peak, so that `vitserve bench`
 * can report "% of peak" for the CPU it runs on rather than for a CPU in a
 * design note.  Each thread runs independent chains of vector FMAs held in
 * registers (no memory traffic) for a fixed time; AVX-512 where the CPU has
 * it, else AVX2+FMA, else no figure (0, isa "none").  Main thread +
 * helpers, once. */
#include "peak.h"

#include <pthread.h>
#include <stdint.h>

#include "common/vs.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static double run_avx512(double ms, uint64_t *iters)
{
    /* Ten named accumulators, so that they live in registers: FMA latency
     * (4 cycles) x 2 ports needs at least 8 independent chains. */
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    __m512 c0 = _mm512_set1_ps(0), c1 = _mm512_set1_ps(1), c2 = _mm512_set1_ps(2),
           c3 = _mm512_set1_ps(3), c4 = _mm512_set1_ps(4), c5 = _mm512_set1_ps(5),
           c6 = _mm512_set1_ps(6), c7 = _mm512_set1_ps(7), c8 = _mm512_set1_ps(8),
           c9 = _mm512_set1_ps(9);
    uint64_t n = 0;
    double t0 = vs_now_ms();
    do {
        for (int r = 0; r < 1024; r++) {
            c0 = _mm512_fmadd_ps(c0, a, b); c1 = _mm512_fmadd_ps(c1, a, b);
            c2 = _mm512_fmadd_ps(c2, a, b); c3 = _mm512_fmadd_ps(c3, a, b);
            c4 = _mm512_fmadd_ps(c4, a, b); c5 = _mm512_fmadd_ps(c5, a, b);
            c6 = _mm512_fmadd_ps(c6, a, b); c7 = _mm512_fmadd_ps(c7, a, b);
            c8 = _mm512_fmadd_ps(c8, a, b); c9 = _mm512_fmadd_ps(c9, a, b);
        }
        n += 1024;
    } while (vs_now_ms() - t0 < ms);
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(c8, c9));
    *iters = n + (_mm512_reduce_add_ps(s) == 12345.0f);
    return 2.0 * 16 * 10;   /* flops per iteration: 10 chains x 16 lanes x (mul+add) */
}

__attribute__((target("avx2,fma"))) static double run_avx2(double ms, uint64_t *iters)
{
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2),
           c3 = _mm256_set1_ps(3), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5),
           c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7), c8 = _mm256_set1_ps(8),
           c9 = _mm256_set1_ps(9);
    uint64_t n = 0;
    double t0 = vs_now_ms();
    do {
        for (int r = 0; r < 1024; r++) {
            c0 = _mm256_fmadd_ps(c0, a, b); c1 = _mm256_fmadd_ps(c1, a, b);
            c2 = _mm256_fmadd_ps(c2, a, b); c3 = _mm256_fmadd_ps(c3, a, b);
            c4 = _mm256_fmadd_ps(c4, a, b); c5 = _mm256_fmadd_ps(c5, a, b);
            c6 = _mm256_fmadd_ps(c6, a, b); c7 = _mm256_fmadd_ps(c7, a, b);
            c8 = _mm256_fmadd_ps(c8, a, b); c9 = _mm256_fmadd_ps(c9, a, b);
        }
        n += 1024;
    } while (vs_now_ms() - t0 < ms);
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(c8, c9));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    *iters = n + (lanes[0] == 12345.0f);
    return 2.0 * 8 * 10;
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
    bool live[MAX_T] = {false};   /* tid[i] was created (and must be joined) */
    const double ms = 150;
    for (int i = 0; i < threads; i++) w[i] = (struct worker){.ms = ms, .isa = "none"};
    double t0 = vs_now_ms();
    for (int i = 1; i < threads; i++) live[i] = pthread_create(&tid[i], NULL, work, &w[i]) == 0;
    work(&w[0]);
    double total = w[0].flops;
    for (int i = 1; i < threads; i++) {
        if (!live[i]) continue;
        pthread_join(tid[i], NULL);
        total += w[i].flops;
    }
    double el = vs_now_ms() - t0;
    if (isa) *isa = w[0].isa;
    return total / (el / 1000.0) / 1e9;
}
