/* test_serve_jbuf.c: the growable buffer's number formatting without
 * printf (src/serve/jbuf.c), held to snprintf's output: integers over the
 * whole range, and "%.3f" over random magnitudes from 1e-6 to 1e12 with
 * ties (x * 1000 within 1e-6 of a half) the only allowed difference;
 * "%.9g" (the JSON scores) exactly, over every float exponent, random
 * doubles over 40 decades and values at and beside ninth-digit halves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "serve/jbuf.h"

/* What fn (vs_jbuf_u64 or vs_jbuf_i64) appends for v is snprintf's fmt. */
#define EXPECT_INT(fn, fmt, v)                  \
    do {                                        \
        char want_[32];                         \
        struct vs_jbuf b_;                      \
        snprintf(want_, sizeof want_, fmt, v);  \
        vs_jbuf_init(&b_, 0);                   \
        fn(&b_, v);                             \
        assert_string_equal(b_.data, want_);    \
        vs_jbuf_deinit(&b_);                    \
    } while (0)
#define expect_u64(v) EXPECT_INT(vs_jbuf_u64, "%" PRIu64, (uint64_t)(v))
#define expect_i64(v) EXPECT_INT(vs_jbuf_i64, "%" PRId64, (int64_t)(v))

static void test_integers(void **state)
{
    (void)state;
    const uint64_t u[] = {0, 1, 9, 10, 99, 100, 12345, 4294967295u, 4294967296u,
                          10000000000000000000u, UINT64_MAX};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) expect_u64(u[i]);
    const int64_t s[] = {0, -1, 1, -10, 123456789, -987654321, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) expect_i64(s[i]);
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        expect_u64(x >> (x % 64));
        expect_i64((int64_t)x);
    }
    /* appends, after what is there */
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_puts(&b, "n=");
    vs_jbuf_u64(&b, 42);
    vs_jbuf_puts(&b, ",");
    vs_jbuf_i64(&b, -7);
    assert_string_equal(b.data, "n=42,-7");
    vs_jbuf_deinit(&b);
}

static int fixed3_matches(double v)
{
    char want[64];
    snprintf(want, sizeof want, "%.3f", v);
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_fixed3(&b, v);
    int same = !strcmp(b.data, want);
    if (!same) {
        const double t = fabs(v) * 1000.0, half = floor(t) + 0.5;
        const int tie = fabs(t - half) < 1e-6;
        const int neg_zero = !strcmp(want, "-0.000") && !strcmp(b.data, "0.000");
        if (!tie && !neg_zero) print_error("%.17g: got %s, printf %s\n", v, b.data, want);
        same = tie || neg_zero;
    }
    vs_jbuf_deinit(&b);
    return same;
}

static void test_fixed3(void **state)
{
    (void)state;
    const double fixed[] = {0.0, -0.0, 0.0004, 0.0005, 0.0015, 0.001, 0.999, 0.9995, 1.0, 1.5,
                            12.3456, 99.9999, 123456.789, -3.25, -0.0001, 1e12, 9007199254.740,
                            1e13, -1e15, 1e300};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        assert_true(fixed3_matches(fixed[i]));
    uint64_t x = 0x2545F4914F6CDD1Du;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const double mant = (double)(x >> 11) / 9007199254740992.0;   /* [0, 1) */
        const double v = mant * pow(10.0, (double)(x % 19) - 6.0);     /* 1e-6 .. 1e12 */
        assert_true(fixed3_matches(v));
    }
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_fixed3(&b, NAN);
    assert_string_equal(b.data, "nan");
    vs_jbuf_deinit(&b);
}

/* vs_fmt_g9 is "%.9g" byte for byte: no tie exemption here (near-ties go
 * through printf inside it). */
static void expect_g9(double v)
{
    char want[64], got[VS_FMT_G9_SIZE];
    snprintf(want, sizeof want, "%.9g", v);
    const size_t n = vs_fmt_g9(got, v);
    if (strcmp(got, want) != 0) fail_msg("%.17g: got '%s', printf '%s'", v, got, want);
    assert_int_equal(n, strlen(want));
}

static void test_g9(void **state)
{
    (void)state;
    const double fixed[] = {0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 0.25, 1e-4, 9.99999999e-5, 1e-5,
                            1e8, 1e9, 999999999.0, 999999999.5, 999999998.5, 1234567895.0,
                            0.999999999, 0.9999999995, 0.99999999949999, 9.9999999996,
                            123456789.0, 12345678.9, 0.283703178, 3.14159265358979,
                            1e-14, 9.99e-15, 1e31, 9.9e30, 1e-300, 5e-324, 1e300, DBL_MAX,
                            -2.5e-7, 4.2e21, 1e22, 1e23, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) expect_g9(fixed[i]);
    /* Every float32 bit pattern's neighbourhood: scores and logits are
     * floats widened to double; then random doubles over 40 decades. */
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 400000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t bits = (uint32_t)(x >> 32);
        float f;
        memcpy(&f, &bits, sizeof f);
        expect_g9((double)f);
        const double mant = (double)(x >> 11) / 9007199254740992.0;
        expect_g9(mant * pow(10.0, (double)(x % 41) - 20.0));
    }
    /* Values with nine significant digits and a half after them, exactly
     * or as near as doubles get: the ties printf rounds to even. */
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const double d = (double)(100000000 + x % 900000000) + 0.5;
        const int k = (int)(x >> 40) % 24 - 12;
        expect_g9(d * pow(10.0, k));
        expect_g9(nextafter(d, 0) * pow(10.0, k));
        expect_g9(nextafter(d, 2e9) * pow(10.0, k));
    }
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_json_float(&b, 0.283703178f);
    vs_jbuf_puts(&b, ",");
    vs_jbuf_json_float(&b, NAN);
    assert_string_equal(b.data, "0.283703178,null");
    vs_jbuf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_fixed3),
        cmocka_unit_test(test_g9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
