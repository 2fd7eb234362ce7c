/* multipart.c: multipart/form-data parsing over an in-memory body (see
 * multipart.h for the contract).  Invariant while scanning: `p` always
 * points just past a delimiter ("--boundary") that started a line.
 * Reentrant; called on HTTP worker threads. */
#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int vs_multipart_is_form(const char *ct)
{
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    static const char mf[] = "multipart/form-data";
    if (strncasecmp(ct, mf, sizeof mf - 1)) return 0;
    char c = ct[sizeof mf - 1];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

/* Copies at most out_size-1 bytes, always NUL-terminating. */
static void copy_trunc(char *out, size_t out_size, const char *s, size_t n)
{
    if (n >= out_size) n = out_size - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Reads one `key=value` parameter after a ';' in a header value.  On
 * return *s points past it.  Quoted values are unescaped into val.  Returns
 * 0 at the end of the value, 1 for a parameter, -1 if malformed. */
static int next_param(const char **s, const char *end, char *key, size_t key_size,
                      char *val, size_t val_size, size_t *val_len)
{
    const char *p = *s;
    while (p < end && (*p == ';' || *p == ' ' || *p == '\t')) p++;
    if (p >= end) { *s = p; return 0; }
    const char *k = p;
    while (p < end && *p != '=' && *p != ';') p++;
    const char *kend = p;
    while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t')) kend--;
    copy_trunc(key, key_size, k, (size_t)(kend - k));
    size_t vn = 0;
    if (p < end && *p == '=') {
        p++;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p < end && *p == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end) p++;
                if (vn + 1 < val_size) val[vn] = *p;
                vn++;
                p++;
            }
            if (p >= end) return -1; /* unterminated quoted string */
            p++;
        } else {
            while (p < end && *p != ';') {
                if (vn + 1 < val_size) val[vn] = *p;
                vn++;
                p++;
            }
            while (vn > 0 && vn < val_size && (val[vn - 1] == ' ' || val[vn - 1] == '\t')) vn--;
        }
    }
    val[vn < val_size ? vn : val_size - 1] = '\0';
    *val_len = vn;
    *s = p;
    return 1;
}

enum vs_status vs_multipart_boundary(const char *ct, char *out, size_t out_size,
                                     struct vs_err *err)
{
    if (!ct) return vs_err_set(err, VS_BAD_INPUT, "missing Content-Type header");
    const char *semi = strchr(ct, ';');
    if (!semi)
        return vs_err_set(err, VS_BAD_INPUT,
                          "Content-Type multipart/form-data has no boundary parameter");
    const char *s = semi, *end = ct + strlen(ct);
    char key[32], val[128];
    size_t vlen;
    int r;
    while ((r = next_param(&s, end, key, sizeof key, val, sizeof val, &vlen)) == 1) {
        if (strcasecmp(key, "boundary")) continue;
        if (vlen == 0)
            return vs_err_set(err, VS_BAD_INPUT, "multipart boundary is empty");
        if (vlen > VS_MP_MAX_BOUNDARY || vlen + 1 > out_size)
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart boundary is %zu characters long (at most %d)",
                              vlen, VS_MP_MAX_BOUNDARY);
        for (size_t i = 0; i < vlen; i++)
            if ((unsigned char)val[i] < 0x20 || (unsigned char)val[i] >= 0x7F)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "multipart boundary contains a control or non-ASCII byte");
        memcpy(out, val, vlen + 1);
        return VS_OK;
    }
    if (r < 0)
        return vs_err_set(err, VS_BAD_INPUT, "Content-Type has an unterminated quoted parameter");
    return vs_err_set(err, VS_BAD_INPUT,
                      "Content-Type multipart/form-data has no boundary parameter");
}

/* If body[at..] (just past "--boundary") is the end of a delimiter line,
 * returns 1 and sets *next to the first byte of the next line, and *close
 * to whether it was the closing delimiter ("--boundary--").  Returns 0
 * when the bytes there continue the line (so it was not a delimiter). */
static int delim_tail(const uint8_t *body, size_t len, size_t at, size_t *next, int *close)
{
    if (at + 2 <= len && body[at] == '-' && body[at + 1] == '-') {
        *close = 1;
        *next = at + 2;
        return 1;
    }
    while (at < len && (body[at] == ' ' || body[at] == '\t')) at++;
    if (at < len && body[at] == '\n') { *close = 0; *next = at + 1; return 1; }
    if (at + 1 < len && body[at] == '\r' && body[at + 1] == '\n') {
        *close = 0;
        *next = at + 2;
        return 1;
    }
    return 0;
}

/* Finds the next delimiter at or after `from`: "\n--boundary" followed by a
 * valid tail.  Returns the index of the '\n' or (size_t)-1. */
static size_t find_delim(const uint8_t *body, size_t len, size_t from,
                         const char *delim, size_t dlen, size_t *next, int *close)
{
    while (from < len) {
        const uint8_t *nl = memchr(body + from, '\n', len - from);
        if (!nl) return (size_t)-1;
        size_t at = (size_t)(nl - body);
        if (len - at - 1 >= dlen && !memcmp(nl + 1, delim, dlen) &&
            delim_tail(body, len, at + 1 + dlen, next, close))
            return at;
        from = at + 1;
    }
    return (size_t)-1;
}

/* Parses the header lines of part number idx (1-based) starting at *pos;
 * on success *pos is the first data byte. */
static enum vs_status parse_headers(const uint8_t *body, size_t len, size_t *pos,
                                    struct vs_mp_part *part, size_t idx,
                                    struct vs_err *err)
{
    size_t p = *pos, start = p;
    int have_disp = 0;
    for (;;) {
        const uint8_t *nl = memchr(body + p, '\n', len - p);
        if (!nl || (size_t)(nl - body) - start > VS_MP_MAX_HEADER_BYTES) {
            if (!nl && len - start <= VS_MP_MAX_HEADER_BYTES)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "multipart part %zu: headers are not terminated by an empty line", idx);
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart part %zu: headers exceed %d bytes", idx,
                              VS_MP_MAX_HEADER_BYTES);
        }
        size_t e = (size_t)(nl - body);
        size_t le = e;
        if (le > p && body[le - 1] == '\r') le--;
        const char *line = (const char *)body + p;
        size_t n = le - p;
        p = e + 1;
        if (n == 0) break; /* the empty line ends the headers */
        const char *colon = memchr(line, ':', n);
        if (!colon)
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart part %zu: header line without ':'", idx);
        size_t kn = (size_t)(colon - line);
        const char *v = colon + 1, *vend = line + n;
        if (kn == 19 && !strncasecmp(line, "Content-Disposition", 19)) {
            while (v < vend && (*v == ' ' || *v == '\t')) v++;
            const char *t = v;
            while (t < vend && *t != ';' && *t != ' ') t++;
            if ((size_t)(t - v) != 9 || strncasecmp(v, "form-data", 9))
                return vs_err_set(err, VS_BAD_INPUT,
                                  "multipart part %zu: Content-Disposition is not form-data", idx);
            char key[32], val[512];
            size_t vl;
            int r;
            const char *s = t;
            while ((r = next_param(&s, vend, key, sizeof key, val, sizeof val, &vl)) == 1) {
                if (!strcasecmp(key, "name")) {
                    if (vl < sizeof part->name) copy_trunc(part->name, sizeof part->name, val, vl);
                    else part->name[0] = '\0';
                } else if (!strcasecmp(key, "filename")) {
                    copy_trunc(part->filename, sizeof part->filename, val, strlen(val));
                    part->has_filename = 1;
                } else if (!strcasecmp(key, "filename*") && !part->has_filename) {
                    /* RFC 5987: charset'lang'value; keep the value part. */
                    const char *q = strchr(val, '\'');
                    q = q ? strchr(q + 1, '\'') : NULL;
                    const char *fv = q ? q + 1 : val;
                    copy_trunc(part->filename, sizeof part->filename, fv, strlen(fv));
                    part->has_filename = 1;
                }
            }
            if (r < 0)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "multipart part %zu: unterminated quoted string in Content-Disposition", idx);
            have_disp = 1;
        } else if (kn == 12 && !strncasecmp(line, "Content-Type", 12)) {
            while (v < vend && (*v == ' ' || *v == '\t')) v++;
            copy_trunc(part->content_type, sizeof part->content_type, v, (size_t)(vend - v));
        }
    }
    if (!have_disp)
        return vs_err_set(err, VS_BAD_INPUT,
                          "multipart part %zu has no Content-Disposition header", idx);
    *pos = p;
    return VS_OK;
}

enum vs_status vs_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                                  struct vs_mp_part *parts, size_t max_parts,
                                  size_t *nparts, struct vs_err *err)
{
    char delim[VS_MP_MAX_BOUNDARY + 3];
    size_t blen = strlen(boundary);
    if (blen == 0 || blen > VS_MP_MAX_BOUNDARY)
        return vs_err_set(err, VS_BAD_INPUT, "multipart boundary length %zu is invalid", blen);
    delim[0] = delim[1] = '-';
    memcpy(delim + 2, boundary, blen);
    size_t dlen = blen + 2;

    /* The first delimiter opens the body or follows a preamble line. */
    size_t next = 0;
    int close = 0;
    if (!(len >= dlen && !memcmp(body, delim, dlen) && delim_tail(body, len, dlen, &next, &close))) {
        size_t at = find_delim(body, len, 0, delim, dlen, &next, &close);
        if (at == (size_t)-1)
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart body does not contain the boundary given in Content-Type");
    }
    size_t n = 0;
    while (!close) {
        if (n == max_parts)
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart body has more than %zu parts", max_parts);
        struct vs_mp_part *part = &parts[n];
        memset(part, 0, sizeof *part);
        size_t pos = next;
        enum vs_status st = parse_headers(body, len, &pos, part, n + 1, err);
        if (st) return st;
        size_t at = find_delim(body, len, pos > 0 ? pos - 1 : 0, delim, dlen, &next, &close);
        if (at == (size_t)-1 || at + 1 < pos)
            return vs_err_set(err, VS_BAD_INPUT,
                              "multipart body has no closing boundary (part %zu is cut off)", n + 1);
        /* Data end at the line break before the delimiter (CRLF or LF). */
        size_t end = at;
        if (end > pos && body[end - 1] == '\r') end--;
        if (end < pos) end = pos; /* empty part whose headers end right at the delimiter */
        part->data = body + pos;
        part->len = end - pos;
        n++;
    }
    *nparts = n;
    return VS_OK;
}
