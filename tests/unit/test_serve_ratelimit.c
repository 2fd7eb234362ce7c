/* test_serve_ratelimit.c: the token-bucket table (src/serve/ratelimit.c)
 * with an injected clock: spec parsing, refusals and refill, header
 * values, independent clients, the bound on the table (LRU forgetting),
 * expiry of idle buckets, a clock going backwards, and many threads.
 * VS_TEST_LABELS: tsan */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "serve/ratelimit.h"

#define SEC 1000000000ull

static void test_parse(void **state)
{
    (void)state;
    int n = 0, w = 0;
    struct vs_err err = {0};
    assert_int_equal(vs_ratelimit_parse("10/minute", &n, &w, &err), VS_OK);
    assert_int_equal(n, 10);
    assert_int_equal(w, 60);
    assert_int_equal(vs_ratelimit_parse("5/s", &n, &w, &err), VS_OK);
    assert_int_equal(w, 1);
    assert_int_equal(vs_ratelimit_parse("7/HOUR", &n, &w, &err), VS_OK);
    assert_int_equal(n, 7);
    assert_int_equal(w, 3600);
    const char *bad[] = {"", "10", "0/minute", "-1/s", "10/day", "x/minute", "10 /minute",
                         "/minute", "99999999999/s"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = '\0';
        assert_int_equal(vs_ratelimit_parse(bad[i], &n, &w, &err), VS_BAD_INPUT);
        assert_non_null(strstr(err.msg, "--rate-limit"));
    }
}

static void test_bucket(void **state)
{
    (void)state;
    struct vs_ratelimit *rl = NULL;
    struct vs_err err = {0};
    assert_int_equal(vs_ratelimit_create(3, 60, 100, &rl, &err), VS_OK);
    struct vs_ratelimit_result r;
    uint64_t t = 1000 * SEC;
    /* A fresh client has the whole bucket: 3 allowed, then refused. */
    for (int i = 0; i < 3; i++) {
        vs_ratelimit_take(rl, "ip:1.2.3.4", t, &r);
        assert_true(r.allowed);
        assert_int_equal(r.limit, 3);
        assert_int_equal(r.remaining, 2 - i);
        /* one token per 20 s: full again after 20 s per missing token */
        assert_int_equal(r.reset_s, 20 * (i + 1));
    }
    vs_ratelimit_take(rl, "ip:1.2.3.4", t, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_s, 20);
    /* Another client is independent. */
    vs_ratelimit_take(rl, "ip:5.6.7.8", t, &r);
    assert_true(r.allowed);
    /* 19 s later still no whole token; Retry-After counts down. */
    vs_ratelimit_take(rl, "ip:1.2.3.4", t + 19 * SEC, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1);
    /* At 20 s one token is back: allowed once, then refused again. */
    vs_ratelimit_take(rl, "ip:1.2.3.4", t + 20 * SEC, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    vs_ratelimit_take(rl, "ip:1.2.3.4", t + 20 * SEC, &r);
    assert_false(r.allowed);
    /* A clock that goes backwards refills nothing (and does not crash). */
    vs_ratelimit_take(rl, "ip:1.2.3.4", t, &r);
    assert_false(r.allowed);
    /* Long idle: at most a full bucket, never more. */
    vs_ratelimit_take(rl, "ip:1.2.3.4", t + 100000 * SEC, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
    char pol[48], st[96];
    vs_ratelimit_headers(&r, pol, sizeof pol, st, sizeof st);
    assert_string_equal(pol, "3;w=60");
    assert_string_equal(st, "limit=3, remaining=2, reset=20");
    vs_ratelimit_destroy(rl);
}

static void test_bounded(void **state)
{
    (void)state;
    struct vs_ratelimit *rl = NULL;
    assert_int_equal(vs_ratelimit_create(2, 60, 4, &rl, NULL), VS_OK);
    struct vs_ratelimit_result r;
    char key[32];
    uint64_t t = 5 * SEC;
    /* Client 0 spends its bucket. */
    vs_ratelimit_take(rl, "c0", t, &r);
    vs_ratelimit_take(rl, "c0", t, &r);
    vs_ratelimit_take(rl, "c0", t, &r);
    assert_false(r.allowed);
    /* 1000 other clients: the table never holds more than 4. */
    for (int i = 1; i <= 1000; i++) {
        snprintf(key, sizeof key, "c%d", i);
        vs_ratelimit_take(rl, key, t, &r);
        assert_true(r.allowed);
        assert_true(vs_ratelimit_clients(rl) <= 4);
    }
    assert_int_equal(vs_ratelimit_clients(rl), 4);
    /* Client 0 was the least recently used: forgotten, so a full bucket. */
    vs_ratelimit_take(rl, "c0", t, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 1);
    /* The 4 most recent keep their state: c1000 has 1 token left. */
    vs_ratelimit_take(rl, "c1000", t, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* After a whole window idle, buckets expire (two per call). */
    vs_ratelimit_take(rl, "new", t + 61 * SEC, &r);
    vs_ratelimit_take(rl, "new", t + 61 * SEC, &r);
    assert_true(vs_ratelimit_clients(rl) < 4);
    vs_ratelimit_destroy(rl);
}

struct thr { struct vs_ratelimit *rl; int allowed; int id; };

static void *worker(void *arg)
{
    struct thr *t = arg;
    struct vs_ratelimit_result r;
    char key[32];
    for (int i = 0; i < 2000; i++) {
        /* Everyone hammers one shared key plus a private one. */
        vs_ratelimit_take(t->rl, "shared", SEC, &r);
        t->allowed += r.allowed;
        snprintf(key, sizeof key, "own%d-%d", t->id, i % 50);
        vs_ratelimit_take(t->rl, key, SEC, &r);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct vs_ratelimit *rl = NULL;
    assert_int_equal(vs_ratelimit_create(100, 3600, 64, &rl, NULL), VS_OK);
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thr){rl, 0, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &t[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += t[i].allowed;
    }
    /* The shared key may be forgotten by LRU pressure (64 slots, 200 keys),
     * which hands out a fresh bucket; but never fewer than the limit. */
    assert_true(total >= 100);
    assert_true(vs_ratelimit_clients(rl) <= 64);
    vs_ratelimit_destroy(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
