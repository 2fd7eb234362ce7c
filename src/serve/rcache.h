/* rcache.h: the result cache — key (32 bytes: SHA-256 over vs_digest of
 * the image bytes and the model) -> a vector of floats, the image's result
 * record (server.c: all num_labels logits, then the default scores'
 * ranking).  LRU order with a time-to-live, thread-safe, and single-flight:
 * while one request computes a key, identical requests wait for its answer
 * instead of computing it again.
 *
 * An entry stores all the logits, so every top_k and every score
 * function is served from one entry.  Entries are reference counted:
 * lookup hands out a reference that the caller must release, so eviction
 * never frees memory a reader still uses.  Time is passed in (now_ms) so
 * that TTL expiry is testable with an injected clock; waiting uses the real
 * monotonic clock.
 *
 * Protocol for one key:
 *   HIT      the entry is ready: read vs_rcache_values(), then release.
 *   CLAIMED  the caller must compute it and call vs_rcache_fill(),
 *            vs_rcache_fail() or vs_rcache_abandon(), then release.  A
 *            caller must never wait for another entry while holding an
 *            unfilled claim (deadlock).
 *   PENDING  someone else computes it: vs_rcache_wait(), then release; if
 *            the claimant abandoned the key, look it up again.
 * With capacity 0 the cache is disabled: every lookup is CLAIMED on a
 * private entry that fill() completes without storing it (no single-flight).
 *
 * Threads: every function may be called from any thread.
 */
#ifndef VS_SERVE_RCACHE_H
#define VS_SERVE_RCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"

struct vs_rcache;
struct vs_rcache_entry;

enum vs_rcache_state { VS_RCACHE_HIT, VS_RCACHE_CLAIMED, VS_RCACHE_PENDING };

struct vs_rcache_stats {
    uint64_t hits, misses, evictions, expirations, waits;
    size_t entries;       /* ready entries held */
    size_t capacity;
};

/* capacity 0 disables caching; ttl_ms 0 means entries never expire. */
enum vs_status vs_rcache_create(size_t capacity, uint64_t ttl_ms,
                                struct vs_rcache **out, struct vs_err *err);
/* NULL is a no-op.  All references must have been released. */
void vs_rcache_destroy(struct vs_rcache *c);

/* Looks key up at time now_ms and returns the state above with a
 * reference in *e.  VS_NOMEM is reported as CLAIMED with *e == NULL never:
 * on allocation failure it returns -1 and *e is untouched. */
int vs_rcache_lookup(struct vs_rcache *c, const uint8_t key[32], uint64_t now_ms,
                     struct vs_rcache_entry **e);

/* Looks key up without claiming or waiting, for a caller that must not
 * block: a ready, unexpired entry is returned in *e with a reference
 * (release it) and made the most recent, as a HIT of vs_rcache_lookup,
 * but not counted: vs_rcache_count_hits() counts the hits the caller
 * answers from.  Anything else (absent, being computed, expired) returns
 * false and changes nothing, so that a vs_rcache_lookup later counts and
 * handles it once. */
bool vs_rcache_peek(struct vs_rcache *c, const uint8_t key[32], uint64_t now_ms,
                    struct vs_rcache_entry **e);
void vs_rcache_count_hits(struct vs_rcache *c, unsigned n);
/* Claimant only: stores n values (copied), makes the entry ready, wakes the
 * waiters and inserts it at the LRU head (evicting the tail past capacity).
 * VS_NOMEM leaves the claim failed for waiters. */
enum vs_status vs_rcache_fill(struct vs_rcache *c, struct vs_rcache_entry *e,
                              const float *values, int n, uint64_t now_ms,
                              struct vs_err *err);

/* Claimant only: computing the key failed with *why, a verdict on the
 * image itself (it does not decode, the engine failed on it); the waiters
 * get the same status and message, and the key is forgotten. */
void vs_rcache_fail(struct vs_rcache *c, struct vs_rcache_entry *e,
                    const struct vs_err *why);

/* Claimant only: gives the key up, uncomputed, for a reason of the
 * claimant's own (its deadline passed before its batch ran, the queue
 * refused its group, it stopped on another image): the key is forgotten and
 * the waiters' vs_rcache_wait() reports it abandoned, so that each can look
 * the key up again and claim it or wait on the next claimant, on its own
 * deadline.  *why (may be NULL) is passed along for information. */
void vs_rcache_abandon(struct vs_rcache *c, struct vs_rcache_entry *e,
                       const struct vs_err *why);

/* Waits until a PENDING entry is filled, failed or abandoned, at most until
 * the monotonic deadline (vs_now_ns() scale; 0 = no deadline).  Returns
 * VS_OK when the values are ready; VS_TIMEOUT at the deadline; else the
 * claimant's status and message, with *abandoned (may be NULL) set to true
 * when the claimant abandoned the key rather than failed it. */
enum vs_status vs_rcache_wait(struct vs_rcache *c, struct vs_rcache_entry *e,
                              uint64_t deadline_ns, bool *abandoned, struct vs_err *err);

/* Values of a ready entry (HIT, or after a successful fill/wait). */
const float *vs_rcache_values(const struct vs_rcache_entry *e, int *n);

/* Drops the caller's reference (NULL is a no-op). */
void vs_rcache_release(struct vs_rcache *c, struct vs_rcache_entry *e);

void vs_rcache_stats(struct vs_rcache *c, struct vs_rcache_stats *s);

#endif
