/* jbuf.h: a growable text buffer with a hard cap, and JSON string escaping.
 *
 * Used to build every response body, metrics page and log line of the
 * server.  Invariant: data is always NUL-terminated (len excludes the NUL).
 * Appending never fails loudly: on allocation failure or when the cap would
 * be exceeded the buffer sets `failed` and ignores further appends, so a
 * caller builds a whole document and checks once at the end (curl's dynbuf
 * idea).  Memory grows geometrically with what is appended, never past
 * max + 1 bytes.  Not thread-safe: one buffer belongs to one thread.
 */
#ifndef VS_SERVE_JBUF_H
#define VS_SERVE_JBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vs_jbuf {
    char *data;     /* NUL-terminated once anything was appended; may be NULL before */
    size_t len;     /* bytes used, excluding the NUL */
    size_t cap;     /* bytes allocated */
    size_t max;     /* hard cap on len (0 = 64 MiB) */
    bool failed;    /* an append was dropped (no memory or over max) */
};

/* Sets up an empty buffer; cannot fail (allocates lazily). */
void vs_jbuf_init(struct vs_jbuf *b, size_t max);
/* Frees the memory; the buffer may be re-initialised afterwards. */
void vs_jbuf_deinit(struct vs_jbuf *b);
/* Hands the malloc'd text to the caller (never NULL unless failed); the
 * buffer is left empty. */
char *vs_jbuf_take(struct vs_jbuf *b, size_t *len);

void vs_jbuf_add(struct vs_jbuf *b, const void *data, size_t n);
void vs_jbuf_puts(struct vs_jbuf *b, const char *s);
void vs_jbuf_printf(struct vs_jbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Without printf (the per-request log line and timing fields went through
 * glibc's printf, 5-8% of the server's CPU on cache hits): v in decimal;
 * x with three decimals, as "%.3f" prints it (x is rounded once, from
 * x * 1000, so on an exact half the last digit may differ from printf's,
 * and a negative x that rounds to zero is "0.000", not "-0.000"; values
 * past 2^53 / 1000 and non-finite ones go through printf). */
void vs_jbuf_u64(struct vs_jbuf *b, uint64_t v);
void vs_jbuf_i64(struct vs_jbuf *b, int64_t v);
void vs_jbuf_fixed3(struct vs_jbuf *b, double x);
/* The same into a caller's array (NUL-terminated); returns the length. */
#define VS_FMT_U64_SIZE 21
#define VS_FMT_FIXED3_SIZE 328   /* "%.3f" of -DBL_MAX fits */
size_t vs_fmt_u64(char out[VS_FMT_U64_SIZE], uint64_t v);
size_t vs_fmt_fixed3(char out[VS_FMT_FIXED3_SIZE], double x);
/* x as "%.9g" prints it, byte for byte, for finite x (non-finite: printf's
 * "inf"/"nan").  Without printf for 1e-14 <= |x| < 1e31 (scores, logits),
 * where one correctly rounded scaling by a power of ten gives the nine
 * digits; printf takes the values outside that range and the rare ones
 * whose ninth digit the scaling cannot settle (within 2^-22 of a half). */
#define VS_FMT_G9_SIZE 32
size_t vs_fmt_g9(char out[VS_FMT_G9_SIZE], double x);

/* Appends s[0..n) as a JSON string literal, quotes included.  Control
 * characters are escaped, valid UTF-8 passes through, and every byte that
 * is not part of valid UTF-8 becomes U+FFFD, so the output is always valid
 * JSON even for hostile file names. */
void vs_jbuf_json_str(struct vs_jbuf *b, const char *s, size_t n);
/* Same for a NUL-terminated string (NULL is written as ""). */
void vs_jbuf_json_cstr(struct vs_jbuf *b, const char *s);
/* A float score with 9 significant digits (round-trips float32); non-finite
 * values become null, as JSON has no NaN. */
void vs_jbuf_json_float(struct vs_jbuf *b, double v);

#endif
