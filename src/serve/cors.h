/* cors.h: Cross-Origin Resource Sharing for --cors-origins.
 *
 * The setting is "*" (default: any origin, never with credentials), a
 * comma-separated list of exact origins ("https://a.example,
 * http://localhost:3000"), or "" / "none" (no CORS headers at all).
 * vs_cors_origin() decides the Access-Control-Allow-Origin value for a
 * request's Origin header; the other header values are constants below.
 * Immutable after creation; any thread.
 */
#ifndef VS_SERVE_CORS_H
#define VS_SERVE_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/vs.h"

#define VS_CORS_ALLOW_METHODS "GET, HEAD, POST, OPTIONS"
#define VS_CORS_ALLOW_HEADERS "Authorization, Content-Type, X-Request-ID"
#define VS_CORS_EXPOSE_HEADERS                                                      \
    "X-Request-ID, X-Compute-Time, X-Queue-Time, X-Cache, Retry-After, RateLimit, " \
    "RateLimit-Policy"
#define VS_CORS_MAX_AGE "600"

struct vs_cors;

/* VS_BAD_INPUT for a malformed origin (each must look like
 * scheme://host[:port] with no path). */
enum vs_status vs_cors_create(const char *origins, struct vs_cors **out, struct vs_err *err);
void vs_cors_destroy(struct vs_cors *c);

/* The Access-Control-Allow-Origin value for a request with this Origin
 * header (NULL when absent): "*" in wildcard mode, the origin itself when
 * listed, NULL when CORS headers must not be sent.  *vary is set when the
 * answer depends on Origin (send "Vary: Origin"). */
const char *vs_cors_origin(const struct vs_cors *c, const char *origin, bool *vary);

#endif
