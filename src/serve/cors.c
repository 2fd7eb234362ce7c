/* cors.c: the origin allow-list of --cors-origins (see cors.h).
 * Invariant: `origins` holds `n` lower-cased exact origins (wildcard and
 * off are flags).  Immutable after creation; any thread.
 */
#include "cors.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vs_cors {
    bool any;        /* "*" */
    size_t n;
    char **origins;
};

void vs_cors_destroy(struct vs_cors *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->origins[i]);
    free(c->origins);
    free(c);
}

/* scheme://host[:port], no path, no blanks. */
static bool origin_ok(const char *s, size_t n)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') { sep = s + i; break; }
    if (!sep || sep == s || (size_t)(sep - s) + 3 >= n) return false;
    for (const char *p = sep + 3; p < s + n; p++)
        if (*p == '/' || (unsigned char)*p <= 0x20 || *p == 0x7F || *p == ',') return false;
    return true;
}

enum vs_status vs_cors_create(const char *origins, struct vs_cors **out, struct vs_err *err)
{
    struct vs_cors *c = calloc(1, sizeof *c);
    if (!c) return vs_err_set(err, VS_NOMEM, "out of memory");
    const char *p = origins ? origins : "";
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        size_t n = (size_t)(b - a);
        if (n == 1 && *a == '*') {
            c->any = true;
        } else if (n == 4 && !strncasecmp(a, "none", 4)) {
            /* explicit off */
        } else if (n) {
            if (n > 255 || !origin_ok(a, n)) {
                vs_cors_destroy(c);
                return vs_err_set(err, VS_BAD_INPUT,
                                  "--cors-origins: '%.*s' is not an origin like "
                                  "https://example.com[:port] (or *, or none)",
                                  (int)(n > 100 ? 100 : n), a);
            }
            char **g = realloc(c->origins, (c->n + 1) * sizeof *g);
            char *o = g ? malloc(n + 1) : NULL;
            if (g) c->origins = g;
            if (!o) {
                vs_cors_destroy(c);
                return vs_err_set(err, VS_NOMEM, "out of memory");
            }
            for (size_t i = 0; i < n; i++) o[i] = (char)tolower((unsigned char)a[i]);
            o[n] = '\0';
            c->origins[c->n++] = o;
        }
        p = *e ? e + 1 : e;
    }
    *out = c;
    return VS_OK;
}

const char *vs_cors_origin(const struct vs_cors *c, const char *origin, bool *vary)
{
    *vary = false;
    if (!c) return NULL;
    if (c->any) return "*";
    if (!c->n) return NULL;
    *vary = true;
    if (!origin) return NULL;
    for (size_t i = 0; i < c->n; i++)
        if (!strcasecmp(origin, c->origins[i])) return origin;
    return NULL;
}
