/* digest.c: vs_digest, the 32-byte digest that keys the result cache.
 *
 * Why not plain SHA-256: on a cache hit the digest of the upload is most of
 * the work the server does (a profile of 8 clients re-sending a 61 KB JPEG
 * on the 2-vCPU EPYC: libcrypto's SHA-256 47% of the server's CPU time).
 * SHA-256 with the SHA extensions is latency-bound: one SHA256RNDS2 waits
 * for the previous one (~5 cycles), while the unit accepts about one per
 * cycle (measured: 1.33 ns per instruction in one chain, 0.37 ns each in
 * four independent chains).  So the body is cut into four quarters, the
 * four SHA-256s run interleaved in one loop, and their results are hashed
 * once more:
 *
 *   vs_digest(m) = SHA-256("vitserve digest4" NUL || le64(len) ||
 *                          SHA-256(m0) || SHA-256(m1) || SHA-256(m2) || SHA-256(m3))
 *
 * m_i = m[min(i q, len), min((i+1) q, len)), q = 64 ceil(len / 256) (a
 * quarter rounded up to whole 64-byte blocks, so the last lanes may be
 * short or empty).  The cut depends on len alone and len is in the outer
 * input, so two messages with the same digest either collide in SHA-256 or
 * are equal: the construction is as collision-resistant as SHA-256.
 *
 * Without the SHA extensions the same function is computed with OpenSSL
 * (vs_digest_portable); the tests hold the two, and an independent
 * reference, to the same bytes. */
#include "vs.h"

#include <string.h>

#include <openssl/evp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define VS_HAVE_SHA_NI 1
#endif

static const char digest_tag[16] = "vitserve digest4";   /* 16 bytes, no NUL stored */

/* The quarter length q and the lanes' bounds. */
static void lanes_of(size_t len, size_t off[4], size_t n[4])
{
    const size_t q = (len / 256 + (len % 256 != 0)) * 64;
    for (int i = 0; i < 4; i++) {
        const size_t a = VS_MIN((size_t)i * q, len), b = VS_MIN((size_t)(i + 1) * q, len);
        off[i] = a;
        n[i] = b - a;
    }
}

/* The outer input: tag, little-endian length, the four lane digests. */
static void outer_input(size_t len, const uint8_t lane[4][32], uint8_t buf[152])
{
    memcpy(buf, digest_tag, 16);
    for (int i = 0; i < 8; i++) buf[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    for (int i = 0; i < 4; i++) memcpy(buf + 24 + 32 * i, lane[i], 32);
}

void vs_digest_portable(const void *data, size_t len, uint8_t out[32])
{
    size_t off[4], n[4];
    lanes_of(len, off, n);
    uint8_t lane[4][32], buf[152];
    for (int i = 0; i < 4; i++) vs_sha256((const uint8_t *)data + off[i], n[i], lane[i]);
    outer_input(len, lane, buf);
    vs_sha256(buf, sizeof buf, out);
}

#ifdef VS_HAVE_SHA_NI

#define VS_SHA_NI __attribute__((target("sha,sse4.1,ssse3")))

/* FIPS 180-4, 4.2.2 */
static const uint32_t k256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4, 5.3.3 */
static const uint32_t h256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* One lane's state in the registers' order: SHA256RNDS2 keeps (A, B, E, F)
 * in one register, A in the top dword, and (C, D, G, H) in the other. */
struct sha_lane {
    __m128i abef, cdgh;
};

VS_SHA_NI static struct sha_lane lane_init(void)
{
    const uint32_t *h = h256;
    return (struct sha_lane){_mm_setr_epi32((int)h[5], (int)h[4], (int)h[1], (int)h[0]),
                             _mm_setr_epi32((int)h[7], (int)h[6], (int)h[3], (int)h[2])};
}

VS_SHA_NI static void lane_final(struct sha_lane s, uint8_t out[32])
{
    const uint32_t h[8] = {
        (uint32_t)_mm_extract_epi32(s.abef, 3), (uint32_t)_mm_extract_epi32(s.abef, 2),
        (uint32_t)_mm_extract_epi32(s.cdgh, 3), (uint32_t)_mm_extract_epi32(s.cdgh, 2),
        (uint32_t)_mm_extract_epi32(s.abef, 1), (uint32_t)_mm_extract_epi32(s.abef, 0),
        (uint32_t)_mm_extract_epi32(s.cdgh, 1), (uint32_t)_mm_extract_epi32(s.cdgh, 0),
    };
    for (int i = 0; i < 8; i++)
        for (int b = 0; b < 4; b++) out[4 * i + b] = (uint8_t)(h[i] >> (24 - 8 * b));
}

/* 16 message bytes as four big-endian words, W[t] in the low dword. */
VS_SHA_NI static inline __m128i load_be32x4(const uint8_t *p)
{
    const __m128i swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), swap);
}

/* nblocks 64-byte blocks of each of L messages, the lanes interleaved so
 * that their SHA256RNDS2 chains overlap.  L is a constant at every call:
 * the loops unroll and the arrays live in registers. */
VS_SHA_NI static inline __attribute__((always_inline)) void
compress(const int L, struct sha_lane *s, const uint8_t **p, size_t nblocks)
{
    for (size_t blk = 0; blk < nblocks; blk++) {
        struct sha_lane saved[4];
        __m128i m[4][4];   /* per lane, a ring of the last four word groups */
        for (int l = 0; l < L; l++) {
            saved[l] = s[l];
            for (int j = 0; j < 4; j++) m[l][j] = load_be32x4(p[l] + 16 * j);
            p[l] += 64;
        }
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            const __m128i k = _mm_load_si128((const __m128i *)(k256 + 4 * g));
#pragma GCC unroll 4
            for (int l = 0; l < L; l++) {
                __m128i w = m[l][g & 3];
                if (g >= 4) {
                    /* W[t..t+3] from the groups t-16, t-12, t-8, t-4 (the
                     * ring holds g-4, g-3, g-2, g-1 at g, g+1, g+2, g+3 mod 4) */
                    const __m128i g1 = m[l][(g + 3) & 3], g2 = m[l][(g + 2) & 3];
                    w = _mm_sha256msg1_epu32(w, m[l][(g + 1) & 3]);
                    w = _mm_add_epi32(w, _mm_alignr_epi8(g1, g2, 4));
                    w = _mm_sha256msg2_epu32(w, g1);
                    m[l][g & 3] = w;
                }
                const __m128i wk = _mm_add_epi32(w, k);
                s[l].cdgh = _mm_sha256rnds2_epu32(s[l].cdgh, s[l].abef, wk);
                s[l].abef = _mm_sha256rnds2_epu32(s[l].abef, s[l].cdgh, _mm_shuffle_epi32(wk, 0x0E));
            }
        }
        for (int l = 0; l < L; l++) {
            s[l].abef = _mm_add_epi32(s[l].abef, saved[l].abef);
            s[l].cdgh = _mm_add_epi32(s[l].cdgh, saved[l].cdgh);
        }
    }
}

VS_SHA_NI static void compress1(struct sha_lane *s, const uint8_t *p, size_t nblocks)
{
    compress(1, s, &p, nblocks);
}

VS_SHA_NI static void compress4(struct sha_lane s[4], const uint8_t *p[4], size_t nblocks)
{
    compress(4, s, p, nblocks);
}

/* The rest of a message of total bytes whose full blocks before p are done:
 * its remaining full blocks, then the padding (0x80, zeros, the bit length
 * big-endian in the last 8 bytes of one or two blocks). */
VS_SHA_NI static void lane_finish(struct sha_lane *s, const uint8_t *p, size_t left, size_t total,
                                  uint8_t out[32])
{
    compress1(s, p, left / 64);
    p += left / 64 * 64;
    left %= 64;
    uint8_t tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    const size_t blocks = left < 56 ? 1 : 2;
    const uint64_t bits = (uint64_t)total * 8;
    for (int i = 0; i < 8; i++) tail[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress1(s, tail, blocks);
    lane_final(*s, out);
}

VS_SHA_NI static void digest_sha_ni(const uint8_t *data, size_t len, uint8_t out[32])
{
    size_t off[4], n[4];
    lanes_of(len, off, n);
    struct sha_lane s[4];
    const uint8_t *p[4];
    size_t common = SIZE_MAX;
    for (int i = 0; i < 4; i++) {
        s[i] = lane_init();
        p[i] = data + off[i];
        common = VS_MIN(common, n[i] / 64);
    }
    compress4(s, p, common);
    uint8_t lane[4][32], buf[152];
    for (int i = 0; i < 4; i++) lane_finish(&s[i], p[i], n[i] - common * 64, n[i], lane[i]);
    outer_input(len, lane, buf);
    struct sha_lane o = lane_init();
    lane_finish(&o, buf, sizeof buf, sizeof buf, out);
}

/* CPUID, not __builtin_cpu_supports: clang 14 does not know "sha" there.
 * SHA: leaf 7 EBX bit 29; SSSE3 and SSE4.1: leaf 1 ECX bits 9 and 19. */
bool vs_digest_accelerated(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19))) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & (1u << 29)) != 0;
}

void vs_digest(const void *data, size_t len, uint8_t out[32])
{
    static int accel = -1;   /* racy first use is benign: every thread stores the same */
    int a = __atomic_load_n(&accel, __ATOMIC_RELAXED);
    if (a < 0) __atomic_store_n(&accel, a = vs_digest_accelerated(), __ATOMIC_RELAXED);
    if (a) digest_sha_ni(data, len, out);
    else vs_digest_portable(data, len, out);
}

#else

bool vs_digest_accelerated(void)
{
    return false;
}

void vs_digest(const void *data, size_t len, uint8_t out[32])
{
    vs_digest_portable(data, len, out);
}

#endif
