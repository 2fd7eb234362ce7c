/* jbuf.c: growable capped text buffer and JSON escaping (see jbuf.h).
 * Pure functions on caller-owned buffers; any thread. */
#include "jbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JBUF_DEFAULT_MAX ((size_t)64 << 20)

void vs_jbuf_init(struct vs_jbuf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : JBUF_DEFAULT_MAX;
}

void vs_jbuf_deinit(struct vs_jbuf *b)
{
    free(b->data);
    size_t max = b->max;
    memset(b, 0, sizeof *b);
    b->max = max;
}

char *vs_jbuf_take(struct vs_jbuf *b, size_t *len)
{
    if (b->failed) return NULL;
    if (!b->data) vs_jbuf_add(b, "", 0);
    if (b->failed) return NULL;
    char *d = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

/* Makes room for n more bytes plus the NUL; false (and failed) if not. */
static bool reserve(struct vs_jbuf *b, size_t n)
{
    if (b->failed) return false;
    if (n > b->max - b->len) { b->failed = true; return false; }
    size_t need = b->len + n + 1;
    if (need <= b->cap) return true;
    /* Geometric growth, but never past what max allows (len + n <= max,
     * so need <= max + 1): a capped buffer is never over-allocated. */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (b->max < SIZE_MAX && cap > b->max + 1) cap = b->max + 1;
    char *d = realloc(b->data, cap);
    if (!d) { b->failed = true; return false; }
    b->data = d;
    b->cap = cap;
    return true;
}

/* memcpy in pieces of at most 1 KiB.  glibc 2.36 copies 2 KiB to 512 KiB
 * with `rep movsb`, and on the AMD EPYC (Zen 3) of our machines that runs
 * at about 2 GB/s instead of 35-40 when the destination lies a little
 * ahead of the source modulo 4 KiB (measured: 61 KB copied in 31 us with
 * the two 1 to 31 bytes apart, 1.6 us 64 bytes apart; glibc's
 * Avoid_Short_Distance_REP_MOVSB guard is off on this CPU).  Request
 * bodies land here at whatever offset the previous read ended, so hits
 * paid it often: 7-14% of the server's CPU.  Pieces under the threshold
 * take glibc's vector loop: 5-6 us in those cases, 2.5 us in the best. */
static void copy_pieces(char *dst, const char *src, size_t n)
{
    enum { PIECE = 1024 };
    for (; n > PIECE; n -= PIECE, dst += PIECE, src += PIECE) memcpy(dst, src, PIECE);
    memcpy(dst, src, n);
}

void vs_jbuf_add(struct vs_jbuf *b, const void *data, size_t n)
{
    if (!reserve(b, n)) return;
    if (n) copy_pieces(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void vs_jbuf_puts(struct vs_jbuf *b, const char *s)
{
    vs_jbuf_add(b, s, strlen(s));
}

void vs_jbuf_printf(struct vs_jbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = true; return; }
    if ((size_t)n < sizeof small) { vs_jbuf_add(b, small, (size_t)n); return; }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void vs_jbuf_json_str(struct vs_jbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    vs_jbuf_add(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        const char *esc = NULL;
        char hex[8];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7F) { snprintf(hex, sizeof hex, "\\u%04x", c); esc = hex; }
        else if (c >= 0x80) {
            adv = utf8_len(p + i, n - i);
            if (!adv) { esc = "\\ufffd"; adv = 1; }
        }
        if (esc) {
            vs_jbuf_add(b, p + run, i - run);
            vs_jbuf_puts(b, esc);
            run = i + adv;
        }
        i += adv;
    }
    vs_jbuf_add(b, p + run, n - run);
    vs_jbuf_add(b, "\"", 1);
}

void vs_jbuf_json_cstr(struct vs_jbuf *b, const char *s)
{
    if (!s) s = "";
    vs_jbuf_json_str(b, s, strlen(s));
}

size_t vs_fmt_u64(char out[VS_FMT_U64_SIZE], uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, d + sizeof d - n, n);
    out[n] = '\0';
    return n;
}

/* The printf fallback of the formatters below: x with fmt into out
 * (size bytes), the length written. */
static size_t fmt_printf(char *out, size_t size, const char *fmt, double x)
{
    int n = snprintf(out, size, fmt, x);
    if (n < 0) return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

size_t vs_fmt_fixed3(char out[VS_FMT_FIXED3_SIZE], double x)
{
    const double a = fabs(x);
    if (!(a < 9007199254740.0))   /* 2^53 / 1000; also NaN */
        return fmt_printf(out, VS_FMT_FIXED3_SIZE, "%.3f", x);
    const uint64_t m = (uint64_t)llround(a * 1000.0);
    size_t n = 0;
    if (signbit(x) && m) out[n++] = '-';
    n += vs_fmt_u64(out + n, m / 1000);
    out[n++] = '.';
    out[n++] = (char)('0' + m / 100 % 10);
    out[n++] = (char)('0' + m / 10 % 10);
    out[n++] = (char)('0' + m % 10);
    out[n] = '\0';
    return n;
}

size_t vs_fmt_g9(char out[VS_FMT_G9_SIZE], double x)
{
    /* 10^0 .. 10^22: every one exact in a double */
    static const double p10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const double a = fabs(x);
    if (a == 0.0) {
        size_t n = 0;
        if (signbit(x)) out[n++] = '-';
        out[n++] = '0';
        out[n] = '\0';
        return n;
    }
    if (!(a >= 1e-14 && a < 1e31))   /* also inf, NaN */
        return fmt_printf(out, VS_FMT_G9_SIZE, "%.9g", x);
    /* x's decimal exponent E (10^E <= a < 10^(E+1)), then s = a * 10^(8-E)
     * in [1e8, 1e9): one multiplication or division by an exact power of
     * ten, so s is the exact product correctly rounded, within half an ulp
     * (2^-24 below 2^30) */
    int e = (int)floor(log10(a));
    double sc = 0.0;
    for (int tries = 0; tries < 3; tries++) {   /* log10 may be one off near 10^E */
        const int k = 8 - e;
        if (k > 22 || k < -22) return fmt_printf(out, VS_FMT_G9_SIZE, "%.9g", x);
        sc = k >= 0 ? a * p10[k] : a / p10[-k];
        if (sc < 1e8) e--;
        else if (sc >= 1e9) e++;
        else break;
    }
    if (!(sc >= 1e8 && sc < 1e9)) return fmt_printf(out, VS_FMT_G9_SIZE, "%.9g", x);
    const double fl = floor(sc), frac = sc - fl;   /* exact: sc < 2^30 */
    /* the exact value may be a hair on the other side of a half: printf
     * settles it */
    if (fabs(frac - 0.5) <= 0x1p-22) return fmt_printf(out, VS_FMT_G9_SIZE, "%.9g", x);
    uint64_t d = (uint64_t)fl + (frac > 0.5);
    if (d == 1000000000u) d = 100000000u, e++;   /* 9.999999996 -> 10.0000000 */
    char dig[9];
    for (int i = 8; i >= 0; i--) dig[i] = (char)('0' + d % 10), d /= 10;
    int nd = 9;   /* %g drops trailing zeros (and then a bare point) */
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    size_t n = 0;
    if (signbit(x)) out[n++] = '-';
    if (e < -4 || e >= 9) {   /* d.dddddddde+XX; -14 <= e <= 31 here: two digits */
        out[n++] = dig[0];
        if (nd > 1) {
            out[n++] = '.';
            for (int i = 1; i < nd; i++) out[n++] = dig[i];
        }
        out[n++] = 'e';
        out[n++] = e < 0 ? '-' : '+';
        const int ae = e < 0 ? -e : e;
        out[n++] = (char)('0' + ae / 10);
        out[n++] = (char)('0' + ae % 10);
    } else if (e >= 0) {      /* ddd.dddddd */
        for (int i = 0; i <= e; i++) out[n++] = dig[i];
        if (nd > e + 1) {
            out[n++] = '.';
            for (int i = e + 1; i < nd; i++) out[n++] = dig[i];
        }
    } else {                  /* 0.000ddddddddd */
        out[n++] = '0';
        out[n++] = '.';
        for (int i = 0; i < -e - 1; i++) out[n++] = '0';
        for (int i = 0; i < nd; i++) out[n++] = dig[i];
    }
    out[n] = '\0';
    return n;
}

void vs_jbuf_u64(struct vs_jbuf *b, uint64_t v)
{
    char d[VS_FMT_U64_SIZE];
    vs_jbuf_add(b, d, vs_fmt_u64(d, v));
}

void vs_jbuf_i64(struct vs_jbuf *b, int64_t v)
{
    if (v < 0) {
        vs_jbuf_add(b, "-", 1);
        vs_jbuf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        vs_jbuf_u64(b, (uint64_t)v);
    }
}

void vs_jbuf_fixed3(struct vs_jbuf *b, double x)
{
    char d[VS_FMT_FIXED3_SIZE];
    vs_jbuf_add(b, d, vs_fmt_fixed3(d, x));
}

void vs_jbuf_json_float(struct vs_jbuf *b, double v)
{
    if (!isfinite(v)) { vs_jbuf_puts(b, "null"); return; }
    char d[VS_FMT_G9_SIZE];
    vs_jbuf_add(b, d, vs_fmt_g9(d, v));
}
