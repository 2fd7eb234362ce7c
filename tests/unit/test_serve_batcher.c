/* test_serve_batcher.c: the dynamic batcher (src/serve/batcher.c) with a
 * fake compute function: batches formed up to max_batch, the timeout flush
 * of a lone item, queue full -> VS_BUSY, items past their deadline dropped
 * before compute, compute errors reaching every item, draining on destroy;
 * compute() gets the submitters' own input buffers as rows (no copy), in
 * FIFO order; destroy while submitters still wait; a waiter takes its
 * queued item out at its deadline; an item whose requester has gone is
 * dropped uncomputed; once hurried (draining), nothing waits for company;
 * the running pass's age.
 * VS_TEST_LABELS: tsan */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "serve/batcher.h"

#define IN 4   /* floats per input row */
#define OUT 2  /* floats per output row */
#define SEEN 64


struct fake {
    atomic_int calls;
    atomic_int rows;
    atomic_int max_n;
    atomic_int gate;        /* while 1, compute blocks (to fill the queue) */
    atomic_int in_compute;
    enum vs_status fail_with;
    atomic_int observed_batches;
    /* every row pointer compute() was given, in call order (written on the
     * batcher thread, read after vs_batcher_wait / destroy) */
    const float *seen[SEEN];
    int n_seen;
};

/* out[i] = {sum(rows[i]), n}: proves rows are not mixed up. */
static enum vs_status fake_compute(void *ctx, const float *const *rows, int n, float *out,
                                   struct vs_err *err)
{
    struct fake *f = ctx;
    atomic_fetch_add(&f->in_compute, 1);
    while (atomic_load(&f->gate)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&f->calls, 1);
    atomic_fetch_add(&f->rows, n);
    for (int i = 0; i < n && f->n_seen < SEEN; i++) f->seen[f->n_seen++] = rows[i];
    int m = atomic_load(&f->max_n);
    while (n > m && !atomic_compare_exchange_weak(&f->max_n, &m, n)) {}
    if (f->fail_with) return vs_err_set(err, f->fail_with, "fake backend failure");
    for (int i = 0; i < n; i++) {
        float s = 0;
        for (int j = 0; j < IN; j++) s += rows[i][j];
        out[i * OUT] = s;
        out[i * OUT + 1] = (float)n;
    }
    return VS_OK;
}

static void fake_observe(void *ctx, int n, const double *wait_s)
{
    struct fake *f = ctx;
    for (int i = 0; i < n; i++) assert_true(wait_s[i] >= 0);
    atomic_fetch_add(&f->observed_batches, 1);
}

static struct vs_batcher *make(struct fake *f, int max_batch, int timeout_ms, int max_queue)
{
    struct vs_batcher_config cfg = {.max_batch = max_batch, .timeout_ms = timeout_ms,
                                    .max_queue = max_queue, .out_floats = OUT,
                                    .compute = fake_compute, .observe = fake_observe, .ctx = f};
    struct vs_batcher *b = NULL;
    assert_int_equal(vs_batcher_create(&cfg, &b, NULL), VS_OK);
    return b;
}

/* Waits until compute() runs (and blocks on the gate). */
static void wait_in_compute(struct fake *f)
{
    while (!atomic_load(&f->in_compute)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

struct item_buf {
    float in[IN], out[OUT];
    struct vs_batch_item it;
};

static void prep(struct item_buf *x, float v, uint64_t deadline)
{
    memset(x, 0, sizeof *x);
    for (int j = 0; j < IN; j++) x->in[j] = v;
    x->it.in = x->in;
    x->it.out = x->out;
    x->it.deadline_ns = deadline;
}

static void test_group_forms_batches(void **state)
{
    (void)state;
    struct fake f = {0};
    /* Long timeout: batches can only form by reaching max_batch (4). */
    struct vs_batcher *b = make(&f, 4, 10000, 64);
    enum { N = 10 };
    struct item_buf x[N];
    struct vs_batch_item *items[N];
    for (int i = 0; i < N; i++) { prep(&x[i], (float)i, 0); items[i] = &x[i].it; }
    assert_int_equal(vs_batcher_submit(b, items, 8, NULL), VS_OK);
    vs_batcher_wait(b, items, 8); /* two full batches of 4, no timeout wait */
    assert_int_equal(atomic_load(&f.calls), 2);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(x[i].it.status, VS_OK);
        assert_true(x[i].out[0] == 4.0f * (float)i); /* its own row */
        assert_int_equal(x[i].it.batch_size, 4);
    }
    /* compute() read each submitter's own buffer (not a copy), in FIFO order */
    assert_int_equal(f.n_seen, 8);
    for (int i = 0; i < 8; i++) assert_ptr_equal(f.seen[i], x[i].in);
    vs_batcher_destroy(b); /* nothing queued: returns at once */
    assert_int_equal(atomic_load(&f.observed_batches), 2);
}

static void test_timeout_flush(void **state)
{
    (void)state;
    struct fake f = {0};
    struct vs_batcher *b = make(&f, 32, 20, 64);
    struct item_buf x;
    prep(&x, 1, 0);
    struct vs_batch_item *items[1] = {&x.it};
    uint64_t t0 = vs_now_ns();
    assert_int_equal(vs_batcher_submit(b, items, 1, NULL), VS_OK);
    vs_batcher_wait(b, items, 1);
    /* A lone item runs alone once the timeout has passed (and not before). */
    assert_true(vs_now_ns() - t0 >= 19000000u);
    assert_int_equal(x.it.status, VS_OK);
    assert_int_equal(x.it.batch_size, 1);
    assert_true(x.out[1] == 1.0f);
    vs_batcher_destroy(b);
}

static void test_queue_full_and_deadline(void **state)
{
    (void)state;
    struct fake f = {0};
    atomic_store(&f.gate, 1);
    struct vs_batcher *b = make(&f, 1, 0, 3);
    struct item_buf x[6];
    struct vs_batch_item *items[6];
    for (int i = 0; i < 6; i++) { prep(&x[i], (float)i, 0); items[i] = &x[i].it; }
    /* First item is taken and blocks in compute. */
    assert_int_equal(vs_batcher_submit(b, &items[0], 1, NULL), VS_OK);
    wait_in_compute(&f);
    /* Item 1 gets a deadline that will have passed when it is taken. */
    x[1].it.deadline_ns = vs_now_ns() + 1000000u;
    assert_int_equal(vs_batcher_submit(b, &items[1], 2, NULL), VS_OK);
    assert_int_equal(vs_batcher_depth(b), 2);
    struct vs_err err = {0};
    assert_int_equal(vs_batcher_submit(b, &items[3], 2, &err), VS_BUSY); /* 2 + 2 > 3 */
    assert_non_null(strstr(err.msg, "queue is full"));
    assert_int_equal(vs_batcher_depth(b), 2); /* nothing of the refused group queued */
    assert_int_equal(vs_batcher_submit(b, &items[3], 1, NULL), VS_OK);
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
    atomic_store(&f.gate, 0);
    vs_batcher_wait(b, items, 3);
    vs_batcher_wait(b, &items[3], 1);
    assert_int_equal(x[0].it.status, VS_OK);
    assert_int_equal(x[1].it.status, VS_TIMEOUT);
    assert_int_equal(x[1].it.batch_size, 0);
    assert_non_null(strstr(x[1].it.msg, "deadline"));
    assert_int_equal(x[2].it.status, VS_OK);
    assert_int_equal(x[3].it.status, VS_OK);
    assert_int_equal(atomic_load(&f.rows), 3); /* the dropped item never reached compute */
    assert_int_equal(f.n_seen, 3);
    assert_ptr_equal(f.seen[0], x[0].in);
    assert_ptr_equal(f.seen[1], x[2].in);
    assert_ptr_equal(f.seen[2], x[3].in);
    vs_batcher_destroy(b);
}

/* A waiter whose deadline passes while its item is still queued gets it
 * back at its deadline (VS_TIMEOUT, never computed), not after the running
 * batch; head, middle and tail of the queue, and the queue stays intact
 * (a later submit is computed, FIFO order kept). */
struct watchdog {
    struct fake *f;
    atomic_int finished;
};

/* Opens the gate after 2 s unless the test finished: a batcher that only
 * drops items when it takes them fails the timing checks below instead of
 * hanging. */
static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    for (int i = 0; i < 200 && !atomic_load(&w->finished); i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&w->f->gate, 0);
    return NULL;
}

static void test_deadline_while_queued(void **state)
{
    (void)state;
    struct fake f = {0};
    atomic_store(&f.gate, 1);
    struct watchdog wd = {.f = &f};
    pthread_t wt;
    assert_int_equal(pthread_create(&wt, NULL, watchdog_main, &wd), 0);
    struct vs_batcher *b = make(&f, 1, 0, 16);
    enum { A, B, C, D, E, G, H, N };
    struct item_buf x[N];
    struct vs_batch_item *items[N];
    for (int i = 0; i < N; i++) { prep(&x[i], (float)i, 0); items[i] = &x[i].it; }
    assert_int_equal(vs_batcher_submit(b, &items[A], 1, NULL), VS_OK);
    wait_in_compute(&f);   /* A is taken and blocks in compute */
    const uint64_t t0 = vs_now_ns(), dl = t0 + 50000000u;   /* 50 ms */
    x[B].it.deadline_ns = x[D].it.deadline_ns = x[G].it.deadline_ns = dl;
    for (int i = B; i <= G; i++) assert_int_equal(vs_batcher_submit(b, &items[i], 1, NULL), VS_OK);
    assert_int_equal(vs_batcher_depth(b), 5);
    vs_batcher_wait(b, &items[B], 1);   /* the head */
    const uint64_t waited = vs_now_ns() - t0;
    assert_true(waited >= 49000000u);
    assert_true(waited < 1500000000u);   /* at its deadline, while A still computes */
    assert_int_equal(atomic_load(&f.gate), 1);
    assert_int_equal(x[B].it.status, VS_TIMEOUT);
    assert_non_null(strstr(x[B].it.msg, "deadline"));
    vs_batcher_wait(b, &items[D], 1);   /* the middle */
    vs_batcher_wait(b, &items[G], 1);   /* the tail */
    assert_int_equal(x[D].it.status, VS_TIMEOUT);
    assert_int_equal(x[G].it.status, VS_TIMEOUT);
    assert_int_equal(vs_batcher_depth(b), 2);   /* C and E */
    assert_int_equal(vs_batcher_submit(b, &items[H], 1, NULL), VS_OK);
    atomic_store(&f.gate, 0);
    vs_batcher_wait(b, &items[A], 1);
    vs_batcher_wait(b, &items[C], 1);
    vs_batcher_wait(b, &items[E], 1);
    vs_batcher_wait(b, &items[H], 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(x[i].it.status, i == B || i == D || i == G ? VS_TIMEOUT : VS_OK);
    assert_int_equal(f.n_seen, 4);   /* the dropped ones never reached compute */
    assert_ptr_equal(f.seen[0], x[A].in);
    assert_ptr_equal(f.seen[1], x[C].in);
    assert_ptr_equal(f.seen[2], x[E].in);
    assert_ptr_equal(f.seen[3], x[H].in);
    vs_batcher_destroy(b);
    atomic_store(&wd.finished, 1);
    pthread_join(wt, NULL);
}

static void test_oversized_group_into_empty_queue(void **state)
{
    (void)state;
    struct fake f = {0};
    struct vs_batcher *b = make(&f, 2, 0, 2);
    struct item_buf x[5];
    struct vs_batch_item *items[5];
    for (int i = 0; i < 5; i++) { prep(&x[i], 1, 0); items[i] = &x[i].it; }
    assert_int_equal(vs_batcher_submit(b, items, 5, NULL), VS_OK);
    vs_batcher_wait(b, items, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(x[i].it.status, VS_OK);
    assert_int_equal(atomic_load(&f.max_n), 2);
    /* split 2 + 2 + 1 across batches, still in the group's order */
    assert_int_equal(f.n_seen, 5);
    for (int i = 0; i < 5; i++) assert_ptr_equal(f.seen[i], x[i].in);
    vs_batcher_destroy(b);
}

static bool said_gone(void *ctx)
{
    return *(const atomic_int *)ctx != 0;
}

/* An item whose requester has gone (its gone() probe, asked as the batch
 * is taken) is dropped uncomputed, VS_CANCELLED; the rest of its batch,
 * and an item whose probe says "still here", run as usual. */
static void test_gone_dropped(void **state)
{
    (void)state;
    struct fake f = {0};
    struct vs_batcher *b = make(&f, 4, 10000, 64);
    atomic_int gone = 1, here = 0;
    enum { N = 4 };
    struct item_buf x[N];
    struct vs_batch_item *items[N];
    for (int i = 0; i < N; i++) { prep(&x[i], (float)i + 1, 0); items[i] = &x[i].it; }
    x[1].it.gone = said_gone, x[1].it.gone_ctx = &gone;
    x[3].it.gone = said_gone, x[3].it.gone_ctx = &gone;
    x[2].it.gone = said_gone, x[2].it.gone_ctx = &here;
    assert_int_equal(vs_batcher_submit(b, items, N, NULL), VS_OK);
    vs_batcher_wait(b, items, N);
    assert_int_equal(atomic_load(&f.calls), 1);
    assert_int_equal(atomic_load(&f.rows), 2);
    for (int i = 0; i < N; i++) {
        if (i == 1 || i == 3) {
            assert_int_equal(x[i].it.status, VS_CANCELLED);
            assert_int_equal(x[i].it.batch_size, 0);
            assert_non_null(strstr(x[i].it.msg, "client disconnected"));
            assert_true(x[i].out[0] == 0.0f);   /* never written */
        } else {
            assert_int_equal(x[i].it.status, VS_OK);
            assert_int_equal(x[i].it.batch_size, 2);
            assert_true(x[i].out[0] == 4.0f * ((float)i + 1));
        }
    }
    vs_batcher_destroy(b);
}

/* vs_batcher_hurry (the server draining): a lone queued item runs at once
 * instead of after the minute's wait for company, and so does one
 * submitted afterwards. */
static void test_hurry(void **state)
{
    (void)state;
    struct fake f = {0};
    struct vs_batcher *b = make(&f, 4, 60000, 64);
    struct item_buf x[2];
    prep(&x[0], 1, 0);
    prep(&x[1], 2, 0);
    struct vs_batch_item *first[1] = {&x[0].it}, *second[1] = {&x[1].it};
    const uint64_t t0 = vs_now_ns();
    assert_int_equal(vs_batcher_submit(b, first, 1, NULL), VS_OK);
    vs_batcher_hurry(b);
    vs_batcher_wait(b, first, 1);
    assert_int_equal(vs_batcher_submit(b, second, 1, NULL), VS_OK);
    vs_batcher_wait(b, second, 1);
    assert_true(vs_now_ns() - t0 < 20000000000u);   /* not the 60 s company wait */
    assert_int_equal(x[0].it.status, VS_OK);
    assert_int_equal(x[1].it.status, VS_OK);
    assert_int_equal(x[0].it.batch_size, 1);
    assert_int_equal(atomic_load(&f.calls), 2);
    vs_batcher_destroy(b);
}

/* vs_batcher_pass_s: 0 while idle, the running pass's age while compute()
 * runs (the server's stall watchdog), 0 again once it returned. */
static void test_pass_age(void **state)
{
    (void)state;
    struct fake f = {0};
    atomic_store(&f.gate, 1);
    struct vs_batcher *b = make(&f, 4, 0, 64);
    assert_true(vs_batcher_pass_s(b) == 0.0);
    struct item_buf x;
    prep(&x, 1, 0);
    struct vs_batch_item *items[1] = {&x.it};
    assert_int_equal(vs_batcher_submit(b, items, 1, NULL), VS_OK);
    wait_in_compute(&f);
    struct timespec ts = {0, 60 * 1000 * 1000};
    nanosleep(&ts, NULL);
    const double age = vs_batcher_pass_s(b);
    assert_true(age >= 0.05 && age < 60.0);
    atomic_store(&f.gate, 0);
    vs_batcher_wait(b, items, 1);
    assert_int_equal(x.it.status, VS_OK);
    assert_true(vs_batcher_pass_s(b) == 0.0);
    vs_batcher_destroy(b);
}

static void test_compute_error(void **state)
{
    (void)state;
    struct fake f = {0};
    f.fail_with = VS_BACKEND;
    struct vs_batcher *b = make(&f, 8, 0, 8);
    struct item_buf x[3];
    struct vs_batch_item *items[3];
    for (int i = 0; i < 3; i++) { prep(&x[i], 1, 0); items[i] = &x[i].it; }
    assert_int_equal(vs_batcher_submit(b, items, 3, NULL), VS_OK);
    vs_batcher_wait(b, items, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(x[i].it.status, VS_BACKEND);
        assert_string_equal(x[i].it.msg, "fake backend failure");
    }
    vs_batcher_destroy(b);
}

/* Groups queued while a pass runs share the next batch: compute() gets
 * their rows in submission order, each row the submitter's own buffer. */
static void test_rows_fifo_across_groups(void **state)
{
    (void)state;
    struct fake f = {0};
    atomic_store(&f.gate, 1);
    struct vs_batcher *b = make(&f, 8, 0, 64);
    enum { N = 7 };
    struct item_buf x[N];
    struct vs_batch_item *items[N];
    for (int i = 0; i < N; i++) { prep(&x[i], (float)(10 + i), 0); items[i] = &x[i].it; }
    assert_int_equal(vs_batcher_submit(b, &items[0], 1, NULL), VS_OK);
    wait_in_compute(&f);   /* item 0 taken, its pass blocked */
    assert_int_equal(vs_batcher_submit(b, &items[1], 2, NULL), VS_OK);  /* 1, 2 */
    assert_int_equal(vs_batcher_submit(b, &items[3], 1, NULL), VS_OK);  /* 3 */
    assert_int_equal(vs_batcher_submit(b, &items[4], 3, NULL), VS_OK);  /* 4, 5, 6 */
    atomic_store(&f.gate, 0);
    vs_batcher_wait(b, items, N);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_int_equal(x[0].it.batch_size, 1);
    for (int i = 1; i < N; i++) {
        assert_int_equal(x[i].it.status, VS_OK);
        assert_int_equal(x[i].it.batch_size, 6);
        assert_true(x[i].out[0] == 4.0f * (float)(10 + i));
        assert_true(x[i].out[1] == 6.0f);
    }
    assert_int_equal(f.n_seen, N);
    for (int i = 0; i < N; i++) assert_ptr_equal(f.seen[i], x[i].in);
    vs_batcher_destroy(b);
}

struct client {
    struct vs_batcher *b;
    int id;
    struct item_buf x;
};

static void *client_main(void *p)
{
    struct client *c = p;
    prep(&c->x, (float)c->id, 0);
    struct vs_batch_item *it = &c->x.it;
    while (vs_batcher_submit(c->b, &it, 1, NULL) != VS_OK) {}
    vs_batcher_wait(c->b, &it, 1);
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    (void)state;
    struct fake f = {0};
    struct vs_batcher *b = make(&f, 8, 200, 64);
    enum { N = 24 };
    struct client cl[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        cl[i].b = b;
        cl[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(cl[i].x.it.status, VS_OK);
        assert_true(cl[i].x.out[0] == 4.0f * (float)i);
    }
    assert_int_equal(atomic_load(&f.rows), N);
    assert_true(atomic_load(&f.calls) < N); /* some batches held several clients */
    /* each client's own buffer reached compute() exactly once */
    assert_int_equal(f.n_seen, N);
    for (int i = 0; i < N; i++) {
        int hits = 0;
        for (int k = 0; k < N; k++) hits += f.seen[k] == cl[i].x.in;
        assert_int_equal(hits, 1);
    }
    vs_batcher_destroy(b);
}

/* Shutdown with a waiter: a submitter still inside vs_batcher_wait while
 * vs_batcher_destroy drains its item gets its answer, and destroy does not
 * free the batcher under it (the waiter re-locks the batcher's mutex after
 * its item is marked done; TSan reports the free racing that re-lock). */
struct waiter {
    struct vs_batcher *b;
    struct item_buf x;
    atomic_int submitted;
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    struct vs_batch_item *it = &w->x.it;
    assert_int_equal(vs_batcher_submit(w->b, &it, 1, NULL), VS_OK);
    atomic_store(&w->submitted, 1);
    vs_batcher_wait(w->b, &it, 1);
    return NULL;
}

static void *destroy_main(void *p)
{
    vs_batcher_destroy(p);
    return NULL;
}

static void test_destroy_with_waiters(void **state)
{
    (void)state;
    struct fake f = {0};
    atomic_store(&f.gate, 1);
    struct vs_batcher *b = make(&f, 1, 0, 8);
    enum { W = 4 };
    struct waiter w[W];
    pthread_t th[W], killer;
    for (int i = 0; i < W; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        prep(&w[i].x, (float)(i + 1), 0);
        assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
        while (!atomic_load(&w[i].submitted)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    wait_in_compute(&f);   /* the first item's pass is blocked */
    /* destroy begins while every waiter waits; then the passes run */
    assert_int_equal(pthread_create(&killer, NULL, destroy_main, b), 0);
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    atomic_store(&f.gate, 0);
    pthread_join(killer, NULL);
    for (int i = 0; i < W; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < W; i++) {
        assert_int_equal(w[i].x.it.status, VS_OK);
        assert_true(w[i].x.out[0] == 4.0f * (float)(i + 1));
    }
}

static void test_bad_config(void **state)
{
    (void)state;
    struct vs_batcher_config cfg = {.max_batch = 0, .max_queue = 1,
                                    .out_floats = 1, .compute = fake_compute};
    struct vs_batcher *b = NULL;
    struct vs_err err = {0};
    assert_int_equal(vs_batcher_create(&cfg, &b, &err), VS_BAD_INPUT);
    assert_null(b);
    vs_batcher_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_forms_batches),
        cmocka_unit_test(test_timeout_flush),
        cmocka_unit_test(test_queue_full_and_deadline),
        cmocka_unit_test(test_deadline_while_queued),
        cmocka_unit_test(test_oversized_group_into_empty_queue),
        cmocka_unit_test(test_gone_dropped),
        cmocka_unit_test(test_hurry),
        cmocka_unit_test(test_pass_age),
        cmocka_unit_test(test_compute_error),
        cmocka_unit_test(test_rows_fifo_across_groups),
        cmocka_unit_test(test_concurrent_clients),
        cmocka_unit_test(test_destroy_with_waiters),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
