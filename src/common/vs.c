/* vs.c: status strings, the error record, clocks, file reading, SHA-256.
 * No state; safe from any thread. */
#include "vs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

static const char *const status_text[] = {
#define X(name, text) text,
    VS_STATUS_MAP(X)
#undef X
};
static const char *const status_names[] = {
#define X(name, text) #name,
    VS_STATUS_MAP(X)
#undef X
};

const char *vs_status_str(enum vs_status s)
{
    return (unsigned)s < VS_STATUS_COUNT ? status_text[s] : "unknown status";
}

const char *vs_status_name(enum vs_status s)
{
    return (unsigned)s < VS_STATUS_COUNT ? status_names[s] : "UNKNOWN";
}

enum vs_status vs_err_set(struct vs_err *err, enum vs_status status,
                          const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void vs_err_prefix(struct vs_err *err, const char *fmt, ...)
{
    if (!err) return;
    char head[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    const char *tail = old[0] ? old : vs_status_str(err->status);
    size_t hl = strlen(head), room = sizeof err->msg;
    if (hl + 2 >= room) hl = room - 3;
    memcpy(err->msg, head, hl);
    memcpy(err->msg + hl, ": ", 2);
    size_t tl = strlen(tail);
    if (tl > room - hl - 3) tl = room - hl - 3;
    memcpy(err->msg + hl + 2, tail, tl);
    err->msg[hl + 2 + tl] = '\0';
}

_Noreturn void vs_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "vitserve: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

uint64_t vs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double vs_now_ms(void) { return (double)vs_now_ns() / 1e6; }

double vs_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum vs_status vs_read_file(const char *path, size_t max_bytes,
                            uint8_t **data, size_t *len, struct vs_err *err)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return vs_err_set(err, errno == ENOENT ? VS_NOT_FOUND : VS_IO,
                          "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    enum vs_status st = VS_OK;
    if (!buf) { st = vs_err_set(err, VS_NOMEM, "%s: out of memory", path); goto out; }
    for (;;) {
        if (n == cap) {
            if (max_bytes && cap > max_bytes) {
                st = vs_err_set(err, VS_TOO_LARGE, "%s: larger than %zu bytes", path, max_bytes);
                goto out;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) { st = vs_err_set(err, VS_NOMEM, "%s: out of memory", path); goto out; }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = vs_err_set(err, VS_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    if (st == VS_OK && max_bytes && n > max_bytes)
        st = vs_err_set(err, VS_TOO_LARGE, "%s: larger than %zu bytes", path, max_bytes);
out:
    if (!is_stdin) fclose(f);
    if (st != VS_OK) { free(buf); return st; }
    *data = buf;
    *len = n;
    return VS_OK;
}

void vs_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void vs_hex(const uint8_t *bytes, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    hex[2 * n] = '\0';
}
