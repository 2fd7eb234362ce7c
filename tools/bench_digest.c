/* bench_digest.c: `vs-bench_digest [--bytes N] [--seconds S]`, the
 * throughput of the result cache's key on one thread: vs_digest (SHA
 * extensions when the CPU has them), the same function through OpenSSL
 * only, and plain SHA-256 (OpenSSL), alternated in one process so that the
 * ratios hold on a noisy machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/vs.h"

typedef void (*digest_fn)(const void *, size_t, uint8_t[32]);

static double rate(digest_fn f, const uint8_t *p, size_t n, double seconds)
{
    uint8_t out[32];
    size_t reps = 0;
    const double t0 = vs_now_ms();
    double t;
    do {
        for (int i = 0; i < 16; i++, reps++) f(p, n, out);
        t = vs_now_ms() - t0;
    } while (t < seconds * 1e3);
    return (double)reps * (double)n / (t * 1e-3) / 1e9;   /* GB/s */
}

int main(int argc, char **argv)
{
    size_t n = 61306;   /* shared/images/photos/grace_hopper_512x600.jpg */
    double seconds = 0.5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bytes") && i + 1 < argc) n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: vs-bench_digest [--bytes N] [--seconds S]\n");
            return 2;
        }
    }
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return 1;
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 2654435761u >> 13);
    const digest_fn fns[3] = {vs_digest, vs_digest_portable, vs_sha256};
    const char *names[3] = {vs_digest_accelerated() ? "vs_digest (SHA extensions)" : "vs_digest (OpenSSL)",
                            "vs_digest_portable (OpenSSL)", "SHA-256 (OpenSSL)"};
    double best[3] = {0};
    for (int round = 0; round < 5; round++)
        for (int f = 0; f < 3; f++) {
            const double r = rate(fns[f], p, n, seconds / 5);
            if (r > best[f]) best[f] = r;
        }
    printf("%zu-byte buffers, one thread, best of 5 alternated rounds:\n", n);
    for (int f = 0; f < 3; f++)
        printf("  %-30s %6.2f GB/s  %7.2f us/buffer  %.2fx SHA-256\n", names[f], best[f],
               (double)n / best[f] / 1e3, best[f] / best[2]);
    free(p);
    return 0;
}
