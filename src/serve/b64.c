/* b64.c: base64 decoder (see b64.h).  Four 6-bit symbols make three bytes;
 * a final group of 2 or 3 symbols makes 1 or 2 bytes. */
#include "b64.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* 0..63 for a symbol of either alphabet, -1 otherwise. */
static int sym(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

enum vs_status vs_serve_b64_decode(const char *s, size_t n, size_t max_bytes, uint8_t **out,
                                   size_t *len, struct vs_err *err)
{
    size_t start = 0;
    if (n >= 5 && !strncasecmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', n);
        if (!comma) return vs_err_set(err, VS_BAD_INPUT, "data: URL without a comma");
        size_t meta = (size_t)(comma - s);
        if (meta < 7 || strncasecmp(comma - 7, ";base64", 7))
            return vs_err_set(err, VS_BAD_INPUT, "data: URL is not base64-encoded (needs ';base64,')");
        start = meta + 1;
    }
    /* Upper bound: 3 bytes per 4 symbols. */
    size_t cap = (n - start) / 4 * 3 + 3;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return vs_err_set(err, VS_NOMEM, "out of memory for %zu decoded bytes", cap);
    uint32_t acc = 0;
    int have = 0;        /* symbols in acc (0..3) */
    size_t o = 0;
    bool padded = false;
    for (size_t i = start; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') { padded = true; continue; }
        int v = sym(c);
        if (v < 0 || padded) {
            free(buf);
            if (v < 0)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "base64: character 0x%02x at offset %zu is not base64", c, i);
            return vs_err_set(err, VS_BAD_INPUT, "base64: data after '=' padding at offset %zu", i);
        }
        acc = (acc << 6) | (uint32_t)v;
        if (++have == 4) {
            buf[o++] = (uint8_t)(acc >> 16);
            buf[o++] = (uint8_t)(acc >> 8);
            buf[o++] = (uint8_t)acc;
            acc = 0;
            have = 0;
        }
        if (o > max_bytes) {
            free(buf);
            return vs_err_set(err, VS_TOO_LARGE, "decoded image exceeds the limit of %zu bytes",
                              max_bytes);
        }
    }
    if (have == 1) {
        free(buf);
        return vs_err_set(err, VS_BAD_INPUT, "base64: truncated (a lone final character)");
    }
    if (have == 2) buf[o++] = (uint8_t)(acc >> 4);
    if (have == 3) {
        buf[o++] = (uint8_t)(acc >> 10);
        buf[o++] = (uint8_t)(acc >> 2);
    }
    if (o > max_bytes) {
        free(buf);
        return vs_err_set(err, VS_TOO_LARGE, "decoded image exceeds the limit of %zu bytes",
                          max_bytes);
    }
    *out = buf;
    *len = o;
    return VS_OK;
}
