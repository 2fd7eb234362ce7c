/* fuzz_util.h: what every fuzz driver shares — the libFuzzer entry point's
 * prototype and the oracle helpers that turn a broken contract into an
 * abort (which both libFuzzer and the replay main report as a failure).
 *
 * A driver checks more than "no crash": the contracts of src/common/vs.h
 * (a failure sets a known status and a non-empty message; out-params are
 * untouched on failure) and whatever invariant its parser promises.  All
 * helpers are static inline so each driver stays one translation unit.
 * Single-threaded: libFuzzer and the replay main call drivers from one
 * thread.
 */
#ifndef VS_FUZZ_UTIL_H
#define VS_FUZZ_UTIL_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/vs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the driver's file:line and a message when cond is false. */
#define VSF_CHECK(cond, ...)                                              \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: fuzz oracle failed: %s: ",            \
                    __FILE__, __LINE__, #cond);                           \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* A failed call must report its status in err and say something. */
static inline void vsf_check_failure(enum vs_status st, const struct vs_err *err,
                                     const char *what)
{
    VSF_CHECK(st > VS_OK && st < VS_STATUS_COUNT, "%s: status %d out of range", what, (int)st);
    VSF_CHECK(err->status == st, "%s: returned %s but err says %s", what,
              vs_status_name(st), vs_status_name(err->status));
    VSF_CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL,
              "%s: message not NUL-terminated", what);
    VSF_CHECK(err->msg[0] != '\0', "%s: %s without a message", what, vs_status_name(st));
}

/* True when all n bytes of p equal v (out-param "untouched" checks). */
static inline int vsf_all_bytes(const void *p, size_t n, uint8_t v)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != v) return 0;
    return 1;
}

/* Reads every byte of [p, p+n) so that ASan checks the whole range;
 * returns a sum the caller feeds to vsf_sink so it is not optimised out. */
static inline uint64_t vsf_touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    return s;
}

static volatile uint64_t vsf_sink_acc;
static inline void vsf_sink(uint64_t v)
{
    vsf_sink_acc = vsf_sink_acc + v;
}

#endif
