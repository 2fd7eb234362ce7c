/* ratelimit.h: per-client token buckets for --rate-limit N/second|minute|hour.
 *
 * Each client key (an API key or a client address, chosen by the caller)
 * owns a bucket of `limit` tokens that refills continuously at
 * limit/window tokens per second; a request takes one token or is refused.
 * The table is bounded: at most max_clients buckets, kept in LRU order; a
 * bucket idle for a whole window is full again, i.e. equal to a fresh one,
 * so it is dropped first (expiry), and past the bound the least recently
 * used bucket is forgotten (that client starts over with a full bucket).
 * Keys are stored as SHA-256 digests (32 bytes whatever the key's length).
 * Time is passed in (now_ns, any monotonic scale) so tests inject a clock.
 *
 * Headers (IETF draft-ietf-httpapi-ratelimit-headers-07):
 *   RateLimit-Policy: 10;w=60
 *   RateLimit: limit=10, remaining=3, reset=42
 * where reset is the seconds until the bucket is full again, and a refused
 * request also gets Retry-After: seconds until one token is back (>= 1).
 * Threads: every function may be called from any thread (one mutex).
 */
#ifndef VS_SERVE_RATELIMIT_H
#define VS_SERVE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"

struct vs_ratelimit;

struct vs_ratelimit_result {
    bool allowed;
    int limit;              /* bucket size */
    int remaining;          /* whole tokens left after this request */
    int reset_s;            /* seconds until the bucket is full again */
    int retry_after_s;      /* refused only: seconds until a token is back (>= 1) */
    int window_s;
};

/* Parses "N/second", "N/minute", "N/hour" (also "N/s", "N/m", "N/h", "N/min")
 * with 1 <= N <= 1e9.  VS_BAD_INPUT names the value. */
enum vs_status vs_ratelimit_parse(const char *spec, int *limit, int *window_s,
                                  struct vs_err *err);

/* limit >= 1 tokens per window_s >= 1 seconds; max_clients >= 1 buckets. */
enum vs_status vs_ratelimit_create(int limit, int window_s, size_t max_clients,
                                   struct vs_ratelimit **out, struct vs_err *err);
void vs_ratelimit_destroy(struct vs_ratelimit *rl);

/* Takes one token from key's bucket at time now_ns; fills *res either way. */
void vs_ratelimit_take(struct vs_ratelimit *rl, const char *key, uint64_t now_ns,
                       struct vs_ratelimit_result *res);

/* Buckets held now (for tests and metrics). */
size_t vs_ratelimit_clients(struct vs_ratelimit *rl);

/* Writes the RateLimit-Policy and RateLimit header values for *res. */
void vs_ratelimit_headers(const struct vs_ratelimit_result *res, char *policy,
                          size_t policy_size, char *state, size_t state_size);

#endif
