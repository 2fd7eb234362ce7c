/* auth.c: API keys as SHA-256 digests, constant-time checks, reload from a
 * file (see auth.h).
 *
 * Invariant: `keys` holds n digests: first the fixed list's, then the
 * file's; reload builds a fresh array and swaps it in under the write lock,
 * so a check never sees a half-built set.  Any thread.
 */
#include "auth.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEY_LEN 4096
#define MAX_FILE_BYTES (1u << 20)

struct vs_auth {
    pthread_rwlock_t lock;
    bool enabled;
    char *file;                 /* NULL: no file */
    uint8_t (*fixed)[32];       /* the list's digests */
    size_t nfixed;
    uint8_t (*keys)[32];        /* fixed + file digests (guarded by lock) */
    size_t n;
};

/* Constant time over 32 bytes: OR of all byte differences. */
static bool digest_equal(const uint8_t a[32], const uint8_t b[32])
{
    volatile uint8_t acc = 0;
    for (int i = 0; i < 32; i++) acc |= (uint8_t)(a[i] ^ b[i]);
    return acc == 0;
}

bool vs_auth_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    uint8_t da[32], db[32];
    vs_sha256(a, alen, da);
    vs_sha256(b, blen, db);
    /* Equal digests and equal lengths (the length check is redundant for
     * SHA-256 but keeps the function exact by definition). */
    return digest_equal(da, db) & (alen == blen);
}

/* Splits text[0..len) on commas and line breaks, trims blanks, skips empty
 * items and lines starting with '#' (when comments), appends each key's
 * digest to *out (realloc'd). */
static enum vs_status parse_keys(const char *text, size_t len, bool comments, const char *what,
                                 uint8_t (**out)[32], size_t *n, struct vs_err *err)
{
    size_t i = 0;
    int line = 1;
    while (i < len) {
        /* One line: [i, e) */
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        size_t ls = i;
        while (ls < e && (text[ls] == ' ' || text[ls] == '\t' || text[ls] == '\r')) ls++;
        if (!(comments && ls < e && text[ls] == '#')) {
            size_t a = i;
            while (a <= e) {
                size_t b = a;
                while (b < e && text[b] != ',') b++;
                size_t ks = a, ke = b;
                while (ks < ke && (text[ks] == ' ' || text[ks] == '\t' || text[ks] == '\r')) ks++;
                while (ke > ks && (text[ke - 1] == ' ' || text[ke - 1] == '\t' ||
                                   text[ke - 1] == '\r'))
                    ke--;
                if (ke > ks) {
                    if (ke - ks > MAX_KEY_LEN)
                        return vs_err_set(err, VS_BAD_INPUT, "%s line %d: key longer than %d bytes",
                                          what, line, MAX_KEY_LEN);
                    for (size_t k = ks; k < ke; k++) {
                        unsigned char ch = (unsigned char)text[k];
                        if (ch <= 0x20 || ch == 0x7F)
                            return vs_err_set(err, VS_BAD_INPUT,
                                              "%s line %d: key contains a blank or control "
                                              "character (byte 0x%02x)", what, line, ch);
                    }
                    uint8_t (*g)[32] = realloc(*out, (*n + 1) * sizeof **out);
                    if (!g) return vs_err_set(err, VS_NOMEM, "out of memory for API keys");
                    *out = g;
                    vs_sha256(text + ks, ke - ks, (*out)[*n]);
                    (*n)++;
                }
                a = b + 1;
            }
        }
        i = e + 1;
        line++;
    }
    return VS_OK;
}

/* Builds fixed + file digests into a fresh array. */
static enum vs_status load_all(struct vs_auth *a, uint8_t (**keys)[32], size_t *n,
                               struct vs_err *err)
{
    *keys = NULL;
    *n = 0;
    if (a->nfixed) {
        *keys = malloc(a->nfixed * sizeof **keys);
        if (!*keys) return vs_err_set(err, VS_NOMEM, "out of memory for API keys");
        memcpy(*keys, a->fixed, a->nfixed * sizeof **keys);
        *n = a->nfixed;
    }
    if (!a->file) return VS_OK;
    uint8_t *data = NULL;
    size_t len = 0;
    enum vs_status st = vs_read_file(a->file, MAX_FILE_BYTES, &data, &len, err);
    if (!st) {
        char what[300];
        snprintf(what, sizeof what, "--api-keys-file '%.256s'", a->file);
        st = parse_keys((const char *)data, len, true, what, keys, n, err);
    } else {
        vs_err_prefix(err, "--api-keys-file");
    }
    free(data);
    if (st) { free(*keys); *keys = NULL; *n = 0; }
    return st;
}

enum vs_status vs_auth_create(const char *keys_csv, const char *file, struct vs_auth **out,
                              struct vs_err *err)
{
    struct vs_auth *a = calloc(1, sizeof *a);
    if (!a) return vs_err_set(err, VS_NOMEM, "out of memory");
    pthread_rwlock_init(&a->lock, NULL);
    enum vs_status st = VS_OK;
    if (keys_csv) {
        st = parse_keys(keys_csv, strlen(keys_csv), false, "--api-key / VITSERVE_API_KEYS",
                        &a->fixed, &a->nfixed, err);
        if (!st && a->nfixed == 0)
            st = vs_err_set(err, VS_BAD_INPUT,
                            "--api-key / VITSERVE_API_KEYS: no key in '%.64s' (an empty value "
                            "would turn authentication off; to serve without keys, give neither)",
                            keys_csv);
    }
    if (!st && file && *file && !(a->file = strdup(file)))
        st = vs_err_set(err, VS_NOMEM, "out of memory");
    if (!st) st = load_all(a, &a->keys, &a->n, err);
    if (st) {
        vs_auth_destroy(a);
        return st;
    }
    a->enabled = a->nfixed > 0 || a->file;
    *out = a;
    return VS_OK;
}

void vs_auth_destroy(struct vs_auth *a)
{
    if (!a) return;
    pthread_rwlock_destroy(&a->lock);
    free(a->fixed);
    free(a->keys);
    free(a->file);
    free(a);
}

bool vs_auth_enabled(const struct vs_auth *a)
{
    return a && a->enabled;
}

size_t vs_auth_count(struct vs_auth *a)
{
    pthread_rwlock_rdlock(&a->lock);
    size_t n = a->n;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

enum vs_status vs_auth_reload(struct vs_auth *a, struct vs_err *err)
{
    if (!a->file) return VS_OK;
    uint8_t (*keys)[32];
    size_t n;
    enum vs_status st = load_all(a, &keys, &n, err);
    if (st) return st;
    pthread_rwlock_wrlock(&a->lock);
    uint8_t (*old)[32] = a->keys;
    a->keys = keys;
    a->n = n;
    pthread_rwlock_unlock(&a->lock);
    free(old);
    return VS_OK;
}

bool vs_auth_check(struct vs_auth *a, const char *authorization, char id[33])
{
    if (!authorization) return false;
    /* "Bearer" (any case), blanks, the token, optional trailing blanks. */
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "Bearer", 6) || (p[6] != ' ' && p[6] != '\t')) return false;
    p += 6;
    while (*p == ' ' || *p == '\t') p++;
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    if (!len) return false;
    uint8_t d[32];
    vs_sha256(p, len, d);
    /* Every key is compared (no early exit): the time does not tell which
     * key, or whether any, matched. */
    bool any = false;
    size_t which = 0;
    pthread_rwlock_rdlock(&a->lock);
    for (size_t i = 0; i < a->n; i++) {
        bool eq = digest_equal(d, a->keys[i]);
        which = eq ? i : which;
        any |= eq;
    }
    if (any && id) vs_hex(a->keys[which], 16, id);
    pthread_rwlock_unlock(&a->lock);
    return any;
}
