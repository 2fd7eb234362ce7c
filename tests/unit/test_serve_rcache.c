/* test_serve_rcache.c: the result cache (src/serve/rcache.c) with an
 * injected clock: LRU eviction order, TTL expiry, capacity 0, reference
 * counts across eviction, single-flight across threads (the claimant
 * fills, fails, or abandons the key and a waiter takes it over), and the
 * non-blocking peek of the HTTP pool threads.
 * VS_TEST_LABELS: tsan */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "serve/rcache.h"

static void key_of(int i, uint8_t key[32])
{
    memset(key, 0, 32);
    key[0] = (uint8_t)i;      /* bucket bits */
    key[31] = (uint8_t)(i >> 8);
}

/* Looks key i up; on a miss fills it with {i, i+0.5}.  Returns the state. */
static int touch(struct vs_rcache *c, int i, uint64_t now)
{
    uint8_t k[32];
    struct vs_rcache_entry *e;
    key_of(i, k);
    int st = vs_rcache_lookup(c, k, now, &e);
    assert_true(st >= 0);
    if (st == VS_RCACHE_CLAIMED) {
        float v[2] = {(float)i, (float)i + 0.5f};
        assert_int_equal(vs_rcache_fill(c, e, v, 2, now, NULL), VS_OK);
    } else {
        assert_int_equal(st, VS_RCACHE_HIT);
        int n;
        const float *v = vs_rcache_values(e, &n);
        assert_int_equal(n, 2);
        assert_true(v[0] == (float)i && v[1] == (float)i + 0.5f);
    }
    vs_rcache_release(c, e);
    return st;
}

static void test_lru_order(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(3, 0, &c, NULL), VS_OK);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_CLAIMED);
    assert_int_equal(touch(c, 2, 0), VS_RCACHE_CLAIMED);
    assert_int_equal(touch(c, 3, 0), VS_RCACHE_CLAIMED);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_HIT);      /* 1 becomes most recent */
    assert_int_equal(touch(c, 4, 0), VS_RCACHE_CLAIMED);  /* evicts 2, the LRU */
    struct vs_rcache_stats s;
    vs_rcache_stats(c, &s);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.entries, 3);
    assert_int_equal(touch(c, 3, 0), VS_RCACHE_HIT);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_HIT);
    assert_int_equal(touch(c, 4, 0), VS_RCACHE_HIT);
    assert_int_equal(touch(c, 2, 0), VS_RCACHE_CLAIMED);  /* was evicted; evicts 3 now */
    assert_int_equal(touch(c, 3, 0), VS_RCACHE_CLAIMED);
    vs_rcache_stats(c, &s);
    assert_int_equal(s.hits, 4);
    assert_int_equal(s.misses, 6);
    assert_int_equal(s.evictions, 3);
    vs_rcache_destroy(c);
}

static void test_ttl(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(10, 1000, &c, NULL), VS_OK);
    assert_int_equal(touch(c, 7, 5000), VS_RCACHE_CLAIMED);
    assert_int_equal(touch(c, 7, 5999), VS_RCACHE_HIT);   /* 999 ms old */
    assert_int_equal(touch(c, 7, 6000), VS_RCACHE_CLAIMED); /* 1000 ms: expired */
    struct vs_rcache_stats s;
    vs_rcache_stats(c, &s);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(s.entries, 1);
    assert_int_equal(touch(c, 7, 6500), VS_RCACHE_HIT);   /* the refill restarted the TTL */
    vs_rcache_destroy(c);
}

/* The clock is read by each request before its look-ups, so a look-up can
 * carry a time older than the fill of an entry another request completed
 * meanwhile: that entry is fresh (age 0), not expired by an unsigned
 * wrap-around of now - stamp. */
static void test_ttl_clock_behind_fill(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(10, 1000, &c, NULL), VS_OK);
    assert_int_equal(touch(c, 7, 5000), VS_RCACHE_CLAIMED);  /* filled at 5000 */
    assert_int_equal(touch(c, 7, 4990), VS_RCACHE_HIT);      /* read at 4990 */
    struct vs_rcache_stats s;
    vs_rcache_stats(c, &s);
    assert_int_equal(s.expirations, 0);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.entries, 1);
    assert_int_equal(touch(c, 7, 6000), VS_RCACHE_CLAIMED);  /* 1000 ms after the fill */
    vs_rcache_destroy(c);
}

static void test_disabled(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(0, 1000, &c, NULL), VS_OK);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_CLAIMED);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_CLAIMED);
    /* no single flight either: two concurrent lookups both claim */
    uint8_t k[32];
    key_of(9, k);
    struct vs_rcache_entry *a, *b;
    assert_int_equal(vs_rcache_lookup(c, k, 0, &a), VS_RCACHE_CLAIMED);
    assert_int_equal(vs_rcache_lookup(c, k, 0, &b), VS_RCACHE_CLAIMED);
    assert_ptr_not_equal(a, b);
    float v = 1;
    assert_int_equal(vs_rcache_fill(c, a, &v, 1, 0, NULL), VS_OK);
    int n;
    assert_true(vs_rcache_values(a, &n)[0] == 1.0f && n == 1); /* filled values readable */
    vs_rcache_fail(c, b, NULL);
    vs_rcache_release(c, a);
    vs_rcache_release(c, b);
    struct vs_rcache_stats s;
    vs_rcache_stats(c, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.hits, 0);
    vs_rcache_destroy(c);
}

static void test_refcount_survives_eviction(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(1, 0, &c, NULL), VS_OK);
    touch(c, 1, 0);
    uint8_t k[32];
    key_of(1, k);
    struct vs_rcache_entry *held;
    assert_int_equal(vs_rcache_lookup(c, k, 0, &held), VS_RCACHE_HIT);
    touch(c, 2, 0); /* evicts entry 1 while we still hold it */
    int n;
    const float *v = vs_rcache_values(held, &n);
    assert_int_equal(n, 2);
    assert_true(v[0] == 1.0f); /* still readable (ASan would catch a free) */
    vs_rcache_release(c, held);
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_CLAIMED);
    vs_rcache_destroy(c);
}

struct sf_arg {
    struct vs_rcache *c;
    int state;
    enum vs_status wait_status;
    bool abandoned;
    float value;
    char msg[512];
    /* after an abandoned wait: how the key was looked up again, and the
     * value then read (computed here if this thread claimed it) */
    int state2;
    float value2;
};

static void *sf_waiter(void *p)
{
    struct sf_arg *a = p;
    uint8_t k[32];
    key_of(42, k);
    struct vs_rcache_entry *e;
    a->state = vs_rcache_lookup(a->c, k, 0, &e);
    if (a->state == VS_RCACHE_PENDING) {
        struct vs_err err = {0};
        a->wait_status = vs_rcache_wait(a->c, e, 0, &a->abandoned, &err);
        snprintf(a->msg, sizeof a->msg, "%s", err.msg);
        if (a->wait_status == VS_OK) a->value = vs_rcache_values(e, NULL)[0];
    }
    vs_rcache_release(a->c, e);
    if (a->abandoned) {
        /* Take over: claim and compute, or wait on whoever claimed first. */
        a->state2 = vs_rcache_lookup(a->c, k, 0, &e);
        if (a->state2 == VS_RCACHE_CLAIMED) {
            float v = 4.5f;
            if (vs_rcache_fill(a->c, e, &v, 1, 0, NULL) == VS_OK) a->value2 = v;
        } else if (a->state2 == VS_RCACHE_HIT ||
                   (a->state2 == VS_RCACHE_PENDING &&
                    vs_rcache_wait(a->c, e, 0, NULL, NULL) == VS_OK)) {
            a->value2 = vs_rcache_values(e, NULL)[0];
        }
        vs_rcache_release(a->c, e);
    }
    return NULL;
}

enum sf_end { SF_FILL, SF_FAIL, SF_ABANDON };

static void single_flight(enum sf_end how)
{
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(4, 0, &c, NULL), VS_OK);
    uint8_t k[32];
    key_of(42, k);
    struct vs_rcache_entry *mine;
    assert_int_equal(vs_rcache_lookup(c, k, 0, &mine), VS_RCACHE_CLAIMED);
    enum { N = 6 };
    pthread_t th[N];
    struct sf_arg args[N];
    for (int i = 0; i < N; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].c = c;
        assert_int_equal(pthread_create(&th[i], NULL, sf_waiter, &args[i]), 0);
    }
    /* Wait until every thread has joined the flight. */
    for (;;) {
        struct vs_rcache_stats s;
        vs_rcache_stats(c, &s);
        if (s.waits == N) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    struct vs_err why;
    if (how == SF_FILL) {
        float v = 3.5f;
        assert_int_equal(vs_rcache_fill(c, mine, &v, 1, 0, NULL), VS_OK);
    } else if (how == SF_FAIL) {
        vs_err_set(&why, VS_BAD_INPUT, "corrupt JPEG");
        vs_rcache_fail(c, mine, &why);
    } else {
        vs_err_set(&why, VS_TIMEOUT, "request deadline passed after 9 ms in the queue");
        vs_rcache_abandon(c, mine, &why);
    }
    vs_rcache_release(c, mine);
    int reclaimed = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].state, VS_RCACHE_PENDING);
        if (how == SF_FILL) {
            assert_int_equal(args[i].wait_status, VS_OK);
            assert_false(args[i].abandoned);
            assert_true(args[i].value == 3.5f);
        } else if (how == SF_FAIL) {
            /* the image's own failure is everyone's */
            assert_int_equal(args[i].wait_status, VS_BAD_INPUT);
            assert_false(args[i].abandoned);
            assert_string_equal(args[i].msg, "corrupt JPEG");
        } else {
            /* the claimant's own failure: each waiter is told so, looks the
             * key up again, and exactly one of them computes it */
            assert_int_equal(args[i].wait_status, VS_TIMEOUT);
            assert_true(args[i].abandoned);
            assert_string_equal(args[i].msg, "request deadline passed after 9 ms in the queue");
            assert_true(args[i].state2 == VS_RCACHE_CLAIMED || args[i].state2 == VS_RCACHE_PENDING ||
                        args[i].state2 == VS_RCACHE_HIT);
            reclaimed += args[i].state2 == VS_RCACHE_CLAIMED;
            assert_true(args[i].value2 == 4.5f);
        }
    }
    struct vs_rcache_stats s;
    vs_rcache_stats(c, &s);
    if (how == SF_ABANDON) {
        assert_int_equal(reclaimed, 1);
        assert_int_equal(s.misses, 2);   /* the abandoned claim and the take-over */
        assert_int_equal(s.entries, 1);  /* the take-over's values are cached */
    } else {
        assert_int_equal(s.misses, 1);   /* computed once */
        assert_int_equal(s.entries, how == SF_FILL ? 1 : 0);
    }
    vs_rcache_destroy(c);
}

static void test_single_flight_fill(void **state) { (void)state; single_flight(SF_FILL); }
static void test_single_flight_fail(void **state) { (void)state; single_flight(SF_FAIL); }
static void test_single_flight_abandon(void **state) { (void)state; single_flight(SF_ABANDON); }

static void test_wait_timeout(void **state)
{
    (void)state;
    struct vs_rcache *c;
    assert_int_equal(vs_rcache_create(4, 0, &c, NULL), VS_OK);
    uint8_t k[32];
    key_of(5, k);
    struct vs_rcache_entry *mine, *other;
    assert_int_equal(vs_rcache_lookup(c, k, 0, &mine), VS_RCACHE_CLAIMED);
    assert_int_equal(vs_rcache_lookup(c, k, 0, &other), VS_RCACHE_PENDING);
    struct vs_err err = {0};
    bool abandoned = true;
    assert_int_equal(vs_rcache_wait(c, other, vs_now_ns() + 20000000u, &abandoned, &err),
                     VS_TIMEOUT);
    assert_false(abandoned);
    vs_rcache_release(c, other);
    vs_rcache_fail(c, mine, NULL);
    vs_rcache_release(c, mine);
    vs_rcache_destroy(c);
}

/* vs_rcache_peek: only a ready, unexpired entry, with a reference and
 * made most recent, counted by vs_rcache_count_hits alone; absent,
 * pending or expired keys change nothing (no claim, no count, no removal). */
static void test_peek(void **state)
{
    (void)state;
    struct vs_rcache *c;
    struct vs_rcache_stats s;
    struct vs_rcache_entry *e = NULL, *p = NULL;
    uint8_t k1[32], k2[32];
    key_of(1, k1);
    key_of(2, k2);
    assert_int_equal(vs_rcache_create(2, 1000, &c, NULL), VS_OK);

    assert_false(vs_rcache_peek(c, k1, 0, &p));             /* absent: not claimed */
    assert_int_equal(vs_rcache_lookup(c, k1, 0, &e), VS_RCACHE_CLAIMED);
    assert_false(vs_rcache_peek(c, k1, 0, &p));             /* pending */
    float v[2] = {1.0f, 1.5f};
    assert_int_equal(vs_rcache_fill(c, e, v, 2, 0, NULL), VS_OK);
    vs_rcache_release(c, e);
    vs_rcache_stats(c, &s);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.waits, 0);

    assert_int_equal(touch(c, 2, 10), VS_RCACHE_CLAIMED);   /* LRU: 2, 1 */
    assert_true(vs_rcache_peek(c, k1, 20, &p));             /* ready: LRU 1, 2 */
    int n = 0;
    const float *got = vs_rcache_values(p, &n);
    assert_int_equal(n, 2);
    assert_true(got[0] == 1.0f && got[1] == 1.5f);
    assert_int_equal(touch(c, 3, 30), VS_RCACHE_CLAIMED);   /* evicts 2, not 1 */
    vs_rcache_release(c, p);                                /* the reference outlived nothing */
    vs_rcache_stats(c, &s);
    assert_int_equal(s.hits, 0);                            /* a peek is not counted */
    vs_rcache_count_hits(c, 3);
    vs_rcache_stats(c, &s);
    assert_int_equal(s.hits, 3);
    assert_int_equal(s.evictions, 1);
    assert_false(vs_rcache_peek(c, k2, 30, &p));            /* evicted */

    assert_false(vs_rcache_peek(c, k1, 1000, &p));          /* 1000 ms old: expired ... */
    vs_rcache_stats(c, &s);
    assert_int_equal(s.expirations, 0);                     /* ... left for lookup */
    assert_int_equal(s.entries, 2);
    assert_int_equal(vs_rcache_lookup(c, k1, 1000, &e), VS_RCACHE_CLAIMED);
    vs_rcache_stats(c, &s);
    assert_int_equal(s.expirations, 1);
    vs_rcache_abandon(c, e, NULL);
    vs_rcache_release(c, e);

    vs_rcache_destroy(c);
    assert_int_equal(vs_rcache_create(0, 0, &c, NULL), VS_OK);  /* disabled: never a hit */
    assert_int_equal(touch(c, 1, 0), VS_RCACHE_CLAIMED);
    assert_false(vs_rcache_peek(c, k1, 0, &p));
    vs_rcache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_ttl_clock_behind_fill),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_refcount_survives_eviction),
        cmocka_unit_test(test_single_flight_fill),
        cmocka_unit_test(test_single_flight_fail),
        cmocka_unit_test(test_single_flight_abandon),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
