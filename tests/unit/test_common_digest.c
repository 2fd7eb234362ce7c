/* test_common_digest.c: vs_digest (src/common/digest.c), the result
 * cache's key, against a reference built here from OpenSSL's SHA-256 and
 * the definition (tag, le64 length, SHA-256 of each quarter, quarters cut
 * at 64 ceil(len / 256)), for every length 0..1100, lengths around the
 * block and quarter boundaries, a 1 MiB buffer, and unaligned starts; the
 * SHA-extension path and the OpenSSL-only path give the same bytes; every
 * byte position and the length itself change the digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "common/vs.h"

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

/* The definition, written out independently of digest.c. */
static void reference(const uint8_t *m, size_t len, uint8_t out[32])
{
    size_t quarter = (len + 255) / 256 * 64;
    uint8_t in[16 + 8 + 4 * 32];
    memcpy(in, "vitserve digest4", 16);
    uint64_t l = len;
    for (int i = 0; i < 8; i++, l >>= 8) in[16 + i] = (uint8_t)(l & 0xff);
    for (size_t i = 0; i < 4; i++) {
        size_t a = i * quarter < len ? i * quarter : len;
        size_t b = (i + 1) * quarter < len ? (i + 1) * quarter : len;
        sha256(m + a, b - a, in + 24 + 32 * i);
    }
    sha256(in, sizeof in, out);
}

static uint8_t *random_bytes(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n + 8);
    assert_non_null(p);
    for (size_t i = 0; i < n + 8; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
    return p;
}

static void check(const uint8_t *m, size_t len)
{
    uint8_t want[32], got[32], port[32];
    reference(m, len, want);
    vs_digest(m, len, got);
    vs_digest_portable(m, len, port);
    if (memcmp(want, got, 32) || memcmp(want, port, 32))
        fail_msg("length %zu: vs_digest %s the reference, vs_digest_portable %s", len,
                 memcmp(want, got, 32) ? "differs from" : "matches",
                 memcmp(want, port, 32) ? "differs" : "matches");
}

static void test_every_short_length(void **state)
{
    (void)state;
    uint8_t *m = random_bytes(1100, 1);
    for (size_t len = 0; len <= 1100; len++) check(m, len);
    free(m);
}

static void test_boundaries_and_long(void **state)
{
    (void)state;
    const size_t big = 1u << 20;
    uint8_t *m = random_bytes(big + 300, 2);
    /* around multiples of 64 (one block), 256 (four blocks: the quarters
     * change length) and of the quarter's rounding */
    const size_t bases[] = {4096, 61306, 65536, 196653, big};
    for (size_t b = 0; b < VS_ARRAY_LEN(bases); b++)
        for (size_t d = 0; d < 300; d += (d < 70 ? 1 : 37)) check(m, bases[b] - 64 + d);
    /* the same bytes from unaligned starts */
    for (size_t s = 1; s < 8; s++) check(m + s, 65536 + s);
    free(m);
}

static void test_sensitive_to_every_byte_and_length(void **state)
{
    (void)state;
    const size_t n = 1000;
    uint8_t *m = random_bytes(n, 3), base[32], d[32];
    vs_digest(m, n, base);
    for (size_t i = 0; i < n; i++) {
        m[i] ^= 0x01;
        vs_digest(m, n, d);
        if (!memcmp(d, base, 32)) fail_msg("flipping byte %zu of %zu left the digest unchanged", i, n);
        m[i] ^= 0x01;
    }
    /* a zero byte more is another message (the length is hashed) */
    m[n] = 0;
    vs_digest(m, n + 1, d);
    assert_memory_not_equal(d, base, 32);
    /* and the digest is not plain SHA-256 (the two must never be mixed up) */
    sha256(m, n, d);
    assert_memory_not_equal(d, base, 32);
    free(m);
}

int main(void)
{
    printf("# vs_digest uses %s on this CPU; the OpenSSL-only path is checked as well\n",
           vs_digest_accelerated() ? "the SHA extensions" : "OpenSSL (no SHA extensions)");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_short_length),
        cmocka_unit_test(test_boundaries_and_long),
        cmocka_unit_test(test_sensitive_to_every_byte_and_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
