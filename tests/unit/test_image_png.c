/* test_image_png.c: the PNG, GIF and BMP decoders on images built in memory.
 *
 * Each test writes a tiny file with the writers below (PNG chunks with
 * zlib and CRC, a GIF with a trivial LZW stream, BMP headers by hand),
 * decodes it through vs_image_decode or the per-format entry points, and
 * checks the verdict and the pixels against what Pillow 9.4 does, worked
 * out from the PNG/GIF/BMP rules and Pillow's readers (stated in the
 * comments), never copied from our own output.  The corpus test
 * (test_image_corpus.c) covers real files; this one pins the policies one
 * by one: CRCs, chunk order, text-chunk limits, short/long zlib streams,
 * bit depths, filters, Adam7, palettes, GIF canvases, BMP layouts and RLE.
 * Single-threaded; no files, no environment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "common/vs.h"
#include "image/decoders.h"
#include "image/image.h"

/* ---- a growable byte buffer ------------------------------------------- */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put8(struct buf *b, unsigned v) { uint8_t c = (uint8_t)v; put(b, &c, 1); }
static void put16le(struct buf *b, unsigned v) { put8(b, v & 255); put8(b, v >> 8); }
static void put32le(struct buf *b, uint32_t v) { put16le(b, v & 0xFFFF); put16le(b, v >> 16); }
static void put32be(struct buf *b, uint32_t v)
{
    put8(b, v >> 24); put8(b, (v >> 16) & 255); put8(b, (v >> 8) & 255); put8(b, v & 255);
}

/* ---- PNG writer --------------------------------------------------------- */

static void png_sig(struct buf *b) { put(b, "\x89PNG\r\n\x1a\n", 8); }

/* A chunk; crc_delta != 0 corrupts its CRC. */
static void png_chunk_crc(struct buf *b, const char *type, const void *d, size_t n, uint32_t crc_delta)
{
    put32be(b, (uint32_t)n);
    put(b, type, 4);
    put(b, d, n);
    uLong c = crc32(0L, (const Bytef *)type, 4);
    if (n) c = crc32(c, d, (uInt)n);
    put32be(b, (uint32_t)c ^ crc_delta);
}

static void png_chunk(struct buf *b, const char *type, const void *d, size_t n)
{
    png_chunk_crc(b, type, d, n, 0);
}

static void png_ihdr(struct buf *b, uint32_t w, uint32_t h, int depth, int ctype, int interlace)
{
    uint8_t d[13];
    d[0] = (uint8_t)(w >> 24); d[1] = (uint8_t)(w >> 16); d[2] = (uint8_t)(w >> 8); d[3] = (uint8_t)w;
    d[4] = (uint8_t)(h >> 24); d[5] = (uint8_t)(h >> 16); d[6] = (uint8_t)(h >> 8); d[7] = (uint8_t)h;
    d[8] = (uint8_t)depth; d[9] = (uint8_t)ctype; d[10] = 0; d[11] = 0; d[12] = (uint8_t)interlace;
    png_chunk(b, "IHDR", d, 13);
}

/* zlib stream of `raw` (filter bytes included). */
static struct buf zcompress(const uint8_t *raw, size_t n)
{
    struct buf z = {0};
    uLongf zl = compressBound((uLong)n);
    z.p = malloc(zl);
    assert_non_null(z.p);
    assert_int_equal(compress2(z.p, &zl, raw, (uLong)n, 9), Z_OK);
    z.n = z.cap = zl;
    return z;
}

static void png_idat(struct buf *b, const uint8_t *raw, size_t n)
{
    struct buf z = zcompress(raw, n);
    png_chunk(b, "IDAT", z.p, z.n);
    free(z.p);
}

static void png_iend(struct buf *b) { png_chunk(b, "IEND", NULL, 0); }

/* Decodes b through the public door; returns the status, fills *img. */
static enum vs_status decode(const struct buf *b, struct vs_image *img, struct vs_err *e)
{
    memset(img, 0, sizeof *img);
    memset(e, 0, sizeof *e);
    return vs_image_decode(b->p, b->n, NULL, img, e);
}

static void expect_px(const struct vs_image *img, int x, int y, unsigned r, unsigned g, unsigned bl)
{
    const uint8_t *p = img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
    if (p[0] != r || p[1] != g || p[2] != bl)
        fail_msg("pixel (%d,%d) = (%u,%u,%u), expected (%u,%u,%u)", x, y, p[0], p[1], p[2], r, g, bl);
}

/* A 2x2 RGB8 image: rows of filter 0 + 6 bytes. */
static const uint8_t rgb2x2_raw[] = {
    0, 10, 20, 30, 40, 50, 60,
    0, 70, 80, 90, 100, 110, 120,
};

static void png_rgb2x2(struct buf *b, uint32_t text_crc_delta, uint32_t idat_crc_delta)
{
    png_sig(b);
    png_ihdr(b, 2, 2, 8, 2, 0);
    png_chunk_crc(b, "tEXt", "Comment\0hi", 10, text_crc_delta);
    struct buf z = zcompress(rgb2x2_raw, sizeof rgb2x2_raw);
    png_chunk_crc(b, "IDAT", z.p, z.n, idat_crc_delta);
    free(z.p);
    png_iend(b);
}

static void check_rgb2x2(const struct vs_image *img)
{
    assert_int_equal(img->width, 2);
    assert_int_equal(img->height, 2);
    assert_string_equal(img->mode, "RGB");
    expect_px(img, 0, 0, 10, 20, 30);
    expect_px(img, 1, 0, 40, 50, 60);
    expect_px(img, 0, 1, 70, 80, 90);
    expect_px(img, 1, 1, 100, 110, 120);
}

/* ---- PNG: chunk policy -------------------------------------------------- */

static void test_png_basic_and_idat_crc(void **state)
{
    (void)state;
    struct buf b = {0};
    struct vs_image img;
    struct vs_err e;
    png_rgb2x2(&b, 0, 0);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_int_equal(img.format, VS_IMAGE_PNG);
    check_rgb2x2(&img);
    vs_image_deinit(&img);
    /* Pillow never checks IDAT CRCs. */
    b.n = 0;
    png_rgb2x2(&b, 0, 0x1234);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    check_rgb2x2(&img);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_png_ancillary_crc_rejects(void **state)
{
    (void)state;
    struct buf b = {0};
    struct vs_image img;
    struct vs_err e;
    /* A wrong CRC on tEXt: Pillow's open raises (libpng would only warn). */
    png_rgb2x2(&b, 1, 0);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "tEXt"));
    assert_null(img.rgb);
    free(b.p);
}

static void test_png_unknown_critical_skipped_and_no_iend(void **state)
{
    (void)state;
    struct buf b = {0};
    struct vs_image img;
    struct vs_err e;
    png_sig(&b);
    png_ihdr(&b, 2, 2, 8, 2, 0);
    png_chunk(&b, "ABCD", "xyz", 3);           /* unknown critical chunk, valid CRC */
    png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
    /* no IEND at all */
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    check_rgb2x2(&img);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_png_ztxt_bomb(void **state)
{
    (void)state;
    /* zTXt inflating to 2 MiB > MAX_TEXT_CHUNK (1 MiB): "Decompressed Data Too Large". */
    size_t big = 2u << 20;
    uint8_t *zeros = calloc(big, 1);
    assert_non_null(zeros);
    struct buf z = zcompress(zeros, big);
    free(zeros);
    struct buf t = {0};
    put(&t, "Comment\0\0", 9);                 /* keyword, NUL, method 0 */
    put(&t, z.p, z.n);
    free(z.p);
    struct buf b = {0};
    png_sig(&b);
    png_ihdr(&b, 2, 2, 8, 2, 0);
    png_chunk(&b, "zTXt", t.p, t.n);
    png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
    png_iend(&b);
    struct vs_image img;
    struct vs_err e;
    assert_int_equal(decode(&b, &img, &e), VS_TOO_LARGE);
    free(t.p);
    free(b.p);
}

/* A PNG of n iCCP chunks each inflating to just under 1 MiB (allowed one
 * by one, as in Pillow). */
static void png_many_iccp(struct buf *b, int n)
{
    const size_t each = (1u << 20) - 16;
    uint8_t *zeros = calloc(each, 1);
    assert_non_null(zeros);
    struct buf z = zcompress(zeros, each);
    free(zeros);
    struct buf c = {0};
    put(&c, "icc\0\0", 5);                     /* profile name, NUL, method 0 */
    put(&c, z.p, z.n);
    free(z.p);
    png_sig(b);
    png_ihdr(b, 2, 2, 8, 2, 0);
    for (int i = 0; i < n; i++) png_chunk(b, "iCCP", c.p, c.n);
    png_idat(b, rgb2x2_raw, sizeof rgb2x2_raw);
    png_iend(b);
    free(c.p);
}

static void test_png_metadata_inflate_budget(void **state)
{
    (void)state;
    /* Sixty-three 1 MiB profiles: under the 64 MiB budget, decoded. */
    struct buf b = {0};
    png_many_iccp(&b, 63);
    struct vs_image img;
    struct vs_err e = {0};
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    check_rgb2x2(&img);
    vs_image_deinit(&img);
    free(b.p);
    /* Seventy: refused once the total passes 64 MiB, naming the reason
     * (each chunk alone is allowed; together they are a CPU bomb). */
    memset(&b, 0, sizeof b);
    png_many_iccp(&b, 70);
    assert_int_equal(decode(&b, &img, &e), VS_TOO_LARGE);
    assert_non_null(strstr(e.msg, "in all"));
    free(b.p);
}

static void test_png_truncated_idat_rejects(void **state)
{
    (void)state;
    /* 1x64 grey, rows of distinct values: cutting the file inside IDAT
     * leaves rows undecoded -> "image file is truncated". */
    uint8_t raw[64 * 2];
    for (int y = 0; y < 64; y++) { raw[2 * y] = 0; raw[2 * y + 1] = (uint8_t)(y * 3 + 1); }
    struct buf z = zcompress(raw, sizeof raw);
    struct buf b = {0};
    png_sig(&b);
    png_ihdr(&b, 1, 64, 8, 0, 0);
    png_chunk(&b, "IDAT", z.p, z.n);
    free(z.p);
    b.n -= 4 + z.n / 2;                        /* cut inside the IDAT data */
    struct vs_image img;
    struct vs_err e;
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "truncated"));
    free(b.p);
}

static void test_png_short_stream_and_extra_data(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    /* A complete zlib stream holding 2 of 4 rows: rows 2-3 stay 0. */
    const uint8_t half[] = {0, 200, 0, 100};
    struct buf b = {0};
    png_sig(&b);
    png_ihdr(&b, 1, 4, 8, 0, 0);
    png_idat(&b, half, sizeof half);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "L");
    expect_px(&img, 0, 0, 200, 200, 200);
    expect_px(&img, 0, 1, 100, 100, 100);
    expect_px(&img, 0, 2, 0, 0, 0);
    expect_px(&img, 0, 3, 0, 0, 0);
    vs_image_deinit(&img);
    /* Rows past the image (and a broken tail) are never inflated. */
    uint8_t more[2 * 2 + 4096];
    memset(more, 7, sizeof more);
    more[0] = 0; more[1] = 5; more[2] = 0; more[3] = 6;
    struct buf z = zcompress(more, sizeof more);
    z.p[z.n - 1] ^= 0xFF;                      /* corrupt the Adler-32 */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 1, 2, 8, 0, 0);
    png_chunk(&b, "IDAT", z.p, z.n);
    free(z.p);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 5, 5, 5);
    expect_px(&img, 0, 1, 6, 6, 6);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_png_bit_depths(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* 16-bit grey opens as "I"; convert("RGB") clamps at 255. */
    const uint8_t g16[] = {0, 0x00, 0x80, 0x00, 0xFF, 0x01, 0x00, 0xFF, 0xFF};
    png_sig(&b);
    png_ihdr(&b, 4, 1, 16, 0, 0);
    png_idat(&b, g16, sizeof g16);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "I");
    expect_px(&img, 0, 0, 128, 128, 128);
    expect_px(&img, 1, 0, 255, 255, 255);
    expect_px(&img, 2, 0, 255, 255, 255);
    expect_px(&img, 3, 0, 255, 255, 255);
    vs_image_deinit(&img);
    /* 16-bit RGB keeps the high byte: 0x01FF -> 1. */
    const uint8_t c16[] = {0, 0x01, 0xFF, 0x80, 0x00, 0xFE, 0x01};
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 1, 1, 16, 2, 0);
    png_idat(&b, c16, sizeof c16);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "RGB");
    expect_px(&img, 0, 0, 1, 128, 254);
    vs_image_deinit(&img);
    /* 2-bit grey: v*85; 4-bit: v*17; 1-bit: 0/255. */
    const uint8_t g2[] = {0, 0x1B};            /* 00 01 10 11 */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 4, 1, 2, 0, 0);
    png_idat(&b, g2, sizeof g2);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "L");
    expect_px(&img, 0, 0, 0, 0, 0);
    expect_px(&img, 1, 0, 85, 85, 85);
    expect_px(&img, 2, 0, 170, 170, 170);
    expect_px(&img, 3, 0, 255, 255, 255);
    vs_image_deinit(&img);
    const uint8_t g4[] = {0, 0x1F};
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 2, 1, 4, 0, 0);
    png_idat(&b, g4, sizeof g4);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 17, 17, 17);
    expect_px(&img, 1, 0, 255, 255, 255);
    vs_image_deinit(&img);
    const uint8_t g1[] = {0, 0xA0};            /* 1 0 1 */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 3, 1, 1, 0, 0);
    png_idat(&b, g1, sizeof g1);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "1");
    expect_px(&img, 0, 0, 255, 255, 255);
    expect_px(&img, 1, 0, 0, 0, 0);
    expect_px(&img, 2, 0, 255, 255, 255);
    vs_image_deinit(&img);
    /* 16-bit grey+alpha opens as RGBA; alpha dropped, high byte of grey. */
    const uint8_t la16[] = {0, 0x7F, 0x01, 0x00, 0x00};
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 1, 1, 16, 4, 0);
    png_idat(&b, la16, sizeof la16);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "RGBA");
    expect_px(&img, 0, 0, 0x7F, 0x7F, 0x7F);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_png_palette_rules(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* Two PLTE entries; index 5 is past the end -> grey ramp (5,5,5). */
    const uint8_t plte[] = {255, 0, 0, 0, 255, 0};
    const uint8_t idx[] = {0, 0, 1, 5};
    png_sig(&b);
    png_ihdr(&b, 3, 1, 8, 3, 0);
    png_chunk(&b, "PLTE", plte, sizeof plte);
    png_chunk(&b, "tRNS", "\0", 1);           /* transparency is dropped, colour kept */
    png_idat(&b, idx, sizeof idx);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "P");
    expect_px(&img, 0, 0, 255, 0, 0);
    expect_px(&img, 1, 0, 0, 255, 0);
    expect_px(&img, 2, 0, 5, 5, 5);
    vs_image_deinit(&img);
    /* Colour type 3 without PLTE: the whole grey ramp. */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 3, 1, 8, 3, 0);
    png_idat(&b, idx, sizeof idx);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 1, 0, 1, 1, 1);
    expect_px(&img, 2, 0, 5, 5, 5);
    vs_image_deinit(&img);
    /* PLTE in a grey image is ignored. */
    const uint8_t g[] = {0, 1, 2};
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 2, 1, 8, 0, 0);
    png_chunk(&b, "PLTE", plte, sizeof plte);
    png_idat(&b, g, sizeof g);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 1, 1, 1);
    expect_px(&img, 1, 0, 2, 2, 2);
    vs_image_deinit(&img);
    free(b.p);
}

/* Filters each row of an RGB8 image with filter type f (0..4) per the
 * PNG spec (encoder side), so the decoder must undo all five. */
static uint8_t paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (uint8_t)((pa <= pb && pa <= pc) ? a : (pb <= pc) ? b : c);
}

static void test_png_filters(void **state)
{
    (void)state;
    enum { W = 5, H = 5, BPP = 3, RB = W * BPP };
    uint8_t img_px[H][RB];
    for (int y = 0; y < H; y++)
        for (int i = 0; i < RB; i++) img_px[y][i] = (uint8_t)((y * 37 + i * 11 + (i * y) % 7) * 5);
    uint8_t raw[H * (RB + 1)];
    for (int y = 0; y < H; y++) {
        int f = y % 5;                          /* None, Sub, Up, Average, Paeth */
        raw[y * (RB + 1)] = (uint8_t)f;
        for (int i = 0; i < RB; i++) {
            int a = i >= BPP ? img_px[y][i - BPP] : 0, b = y ? img_px[y - 1][i] : 0;
            int c = (i >= BPP && y) ? img_px[y - 1][i - BPP] : 0, x = img_px[y][i];
            int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
            raw[y * (RB + 1) + 1 + i] = (uint8_t)(x - pred);
        }
    }
    struct buf b = {0};
    png_sig(&b);
    png_ihdr(&b, W, H, 8, 2, 0);
    png_idat(&b, raw, sizeof raw);
    png_iend(&b);
    struct vs_image img;
    struct vs_err e;
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_memory_equal(img.rgb, img_px, sizeof img_px);
    vs_image_deinit(&img);
    /* Filter type 5 does not exist: "unrecognized data stream contents". */
    raw[0] = 5;
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, W, H, 8, 2, 0);
    png_idat(&b, raw, sizeof raw);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    free(b.p);
}

static void test_png_adam7(void **state)
{
    (void)state;
    /* 9x7 grey, Adam7: the same pixels as the plain image. */
    enum { W = 9, H = 7 };
    static const int c0[7] = {0, 4, 0, 2, 0, 1, 0}, r0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const int dc[7] = {8, 8, 4, 4, 2, 2, 1}, dr[7] = {8, 8, 8, 4, 4, 2, 2};
    uint8_t px[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) px[y][x] = (uint8_t)(y * W + x + 3);
    uint8_t raw[512];
    size_t n = 0;
    for (int p = 0; p < 7; p++) {
        if (c0[p] >= W) continue;
        for (int y = r0[p]; y < H; y += dr[p]) {
            raw[n++] = 0;
            for (int x = c0[p]; x < W; x += dc[p]) raw[n++] = px[y][x];
        }
    }
    struct buf b = {0};
    png_sig(&b);
    png_ihdr(&b, W, H, 8, 0, 1);
    png_idat(&b, raw, n);
    png_iend(&b);
    struct vs_image img;
    struct vs_err e;
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) expect_px(&img, x, y, px[y][x], px[y][x], px[y][x]);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_png_metadata(void **state)
{
    (void)state;
    const struct vs_image_limits lim = {0};
    struct vs_decoded d;
    struct vs_err e;
    struct buf b = {0};
    /* eXIf: handed back with Pillow's "Exif\0\0" prefix. */
    const uint8_t tiff[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0};
    png_sig(&b);
    png_ihdr(&b, 2, 2, 8, 2, 0);
    png_chunk(&b, "eXIf", tiff, sizeof tiff);
    png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
    png_iend(&b);
    memset(&d, 0, sizeof d);
    assert_int_equal(vs_decode_png(b.p, b.n, &lim, &d, &e), VS_OK);
    assert_int_equal(d.exif_len, 6 + sizeof tiff);
    assert_memory_equal(d.exif, "Exif\0\0", 6);
    assert_memory_equal(d.exif + 6, tiff, sizeof tiff);
    vs_decoded_deinit(&d);
    /* XMP in iTXt, attribute form and element form. */
    static const char *xmp[2] = {"<x:xmpmeta><rdf:Description tiff:Orientation=\"6\"/></x:xmpmeta>",
                                 "<rdf:li><tiff:Orientation>3</tiff:Orientation></rdf:li>"};
    for (int k = 0; k < 2; k++) {
        struct buf t = {0};
        put(&t, "XML:com.adobe.xmp\0\0\0\0\0", 22);   /* key, flag, method, lang, tkey */
        put(&t, xmp[k], strlen(xmp[k]));
        b.n = 0;
        png_sig(&b);
        png_ihdr(&b, 2, 2, 8, 2, 0);
        png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
        png_chunk(&b, "iTXt", t.p, t.n);       /* after IDAT: read by load_end */
        png_iend(&b);
        free(t.p);
        memset(&d, 0, sizeof d);
        assert_int_equal(vs_decode_png(b.p, b.n, &lim, &d, &e), VS_OK);
        assert_int_equal(d.xmp_orientation, k == 0 ? 6 : 3);
        assert_null(d.exif);
        vs_decoded_deinit(&d);
    }
    /* ImageMagick's raw profile: three header lines, then hex. */
    const char prof[] = "Raw profile type exif\0\nexif\n      14\n4d4d002a00000008\n000000000000\n";
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 2, 2, 8, 2, 0);
    png_chunk(&b, "tEXt", prof, sizeof prof - 1);
    png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
    png_iend(&b);
    memset(&d, 0, sizeof d);
    assert_int_equal(vs_decode_png(b.p, b.n, &lim, &d, &e), VS_OK);
    assert_int_equal(d.exif_len, sizeof tiff);
    assert_memory_equal(d.exif, tiff, sizeof tiff);
    vs_decoded_deinit(&d);
    free(b.p);
}

static void test_png_limits_and_header(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* Declared 10000x10000 > 89,478,485 px: refused from the header alone. */
    png_sig(&b);
    png_ihdr(&b, 10000, 10000, 1, 0, 0);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_TOO_LARGE);
    /* Width 0: "cannot identify". */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 0, 2, 8, 0, 0);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    /* Bit depth 3 is no Pillow mode: "cannot identify". */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 2, 2, 3, 0, 0);
    png_idat(&b, rgb2x2_raw, sizeof rgb2x2_raw);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    /* IEND before any IDAT: "cannot load this image". */
    b.n = 0;
    png_sig(&b);
    png_ihdr(&b, 2, 2, 8, 2, 0);
    png_iend(&b);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    free(b.p);
}

/* ---- GIF ---------------------------------------------------------------- */

/* LZW data for min code size 2 that restarts the table before every
 * pixel (CLEAR, literal), so every code stays 3 bits; ends with END. */
static void gif_lzw(struct buf *b, const uint8_t *idx, size_t n, int cut)
{
    struct buf bits = {0};
    uint32_t acc = 0;
    int nb = 0;
#define EMIT(code) do { acc |= (uint32_t)(code) << nb; nb += 3; \
        while (nb >= 8) { put8(&bits, acc & 255); acc >>= 8; nb -= 8; } } while (0)
    for (size_t i = 0; i < n; i++) { EMIT(4); EMIT(idx[i]); }
    EMIT(5);
#undef EMIT
    if (nb) put8(&bits, acc & 255);
    put8(b, 2);                                 /* LZW minimum code size */
    size_t total = cut ? bits.n / 2 : bits.n;
    for (size_t o = 0; o < total; o += 255) {
        size_t k = VS_MIN((size_t)255, total - o);
        put8(b, (unsigned)k);
        put(b, bits.p + o, k);
    }
    if (!cut) put8(b, 0);
    free(bits.p);
}

/* Screen sw x sh with a 4-entry global table, one frame fw x fh at (fx,fy). */
static void gif_build(struct buf *b, int sw, int sh, int fx, int fy, int fw, int fh,
                      const uint8_t *idx, int transparent, int cut)
{
    put(b, "GIF89a", 6);
    put16le(b, (unsigned)sw);
    put16le(b, (unsigned)sh);
    put8(b, 0x80 | 1);                          /* global table, 2^(1+1) = 4 entries */
    put8(b, 0);
    put8(b, 0);
    const uint8_t pal[12] = {10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200};
    put(b, pal, 12);
    if (transparent >= 0) {
        const uint8_t gce[] = {'!', 0xF9, 4, 1, 0, 0, (uint8_t)transparent, 0};
        put(b, gce, sizeof gce);
    }
    put8(b, ',');
    put16le(b, (unsigned)fx); put16le(b, (unsigned)fy);
    put16le(b, (unsigned)fw); put16le(b, (unsigned)fh);
    put8(b, 0);
    gif_lzw(b, idx, (size_t)fw * (size_t)fh, cut);
    if (!cut) put8(b, ';');
}

static void test_gif_frame_on_canvas(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* 3x2 screen, 1x2 frame at (1,0) with indices 1, 2: the rest of the
     * canvas is index 0 -> palette[0]. */
    const uint8_t idx[] = {1, 2};
    gif_build(&b, 3, 2, 1, 0, 1, 2, idx, -1, 0);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "P");
    assert_int_equal(img.width, 3);
    assert_int_equal(img.height, 2);
    expect_px(&img, 0, 0, 10, 20, 30);
    expect_px(&img, 1, 0, 200, 0, 0);
    expect_px(&img, 1, 1, 0, 200, 0);
    expect_px(&img, 2, 1, 10, 20, 30);
    vs_image_deinit(&img);
    /* With a transparent index 3 the canvas starts as index 3. */
    b.n = 0;
    gif_build(&b, 3, 2, 1, 0, 1, 2, idx, 3, 0);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 0, 0, 200);
    expect_px(&img, 1, 1, 0, 200, 0);
    vs_image_deinit(&img);
    /* A frame reaching past the screen grows the canvas to 2x3. */
    const uint8_t idx3[] = {1, 2, 3};
    b.n = 0;
    gif_build(&b, 1, 1, 1, 0, 1, 3, idx3, -1, 0);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_int_equal(img.width, 2);
    assert_int_equal(img.height, 3);
    expect_px(&img, 1, 2, 0, 0, 200);
    expect_px(&img, 0, 2, 10, 20, 30);
    vs_image_deinit(&img);
    free(b.p);
}

static void test_gif_truncation(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    uint8_t idx[64];
    for (int i = 0; i < 64; i++) idx[i] = (uint8_t)(i & 3);
    /* Missing trailer: fine (the frame completes before it). */
    gif_build(&b, 8, 8, 0, 0, 8, 8, idx, -1, 0);
    b.n -= 1;
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 1, 0, 200, 0, 0);
    vs_image_deinit(&img);
    /* Cut inside the LZW data: "image file is truncated". */
    b.n = 0;
    gif_build(&b, 8, 8, 0, 0, 8, 8, idx, -1, 1);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    /* Header only: "cannot identify". */
    b.n = 13;
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    free(b.p);
}

/* ---- BMP ---------------------------------------------------------------- */

/* BITMAPFILEHEADER + BITMAPINFOHEADER (40 bytes). */
static void bmp_head(struct buf *b, int32_t w, int32_t h, unsigned bits, unsigned comp,
                     unsigned colors, uint32_t offset)
{
    put(b, "BM", 2);
    put32le(b, 0);
    put32le(b, 0);
    put32le(b, offset);
    put32le(b, 40);
    put32le(b, (uint32_t)w);
    put32le(b, (uint32_t)h);
    put16le(b, 1);
    put16le(b, bits);
    put32le(b, comp);
    put32le(b, 0);
    put32le(b, 2835);
    put32le(b, 2835);
    put32le(b, colors);
    put32le(b, 0);
}

static void test_bmp_24bit_orientation(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* 2x2, bottom-up: the first stored row is the bottom one; BGR order,
     * rows padded to 8 bytes. */
    bmp_head(&b, 2, 2, 24, 0, 0, 54);
    const uint8_t rows[] = {1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0};
    put(&b, rows, sizeof rows);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_int_equal(img.format, VS_IMAGE_BMP);
    assert_string_equal(img.mode, "RGB");
    expect_px(&img, 0, 1, 3, 2, 1);
    expect_px(&img, 1, 1, 6, 5, 4);
    expect_px(&img, 0, 0, 9, 8, 7);
    vs_image_deinit(&img);
    /* Negative height: top-down. */
    b.n = 0;
    bmp_head(&b, 2, -2, 24, 0, 0, 54);
    put(&b, rows, sizeof rows);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 3, 2, 1);
    expect_px(&img, 0, 1, 9, 8, 7);
    vs_image_deinit(&img);
    /* The last row's padding may be missing; one more byte short fails. */
    b.n = 0;
    bmp_head(&b, 2, 2, 24, 0, 0, 54);
    put(&b, rows, sizeof rows - 2);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    vs_image_deinit(&img);
    b.n -= 1;
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    free(b.p);
}

static void test_bmp_palette_and_layouts(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* 8-bit, 2 colours declared (not grey), index 9 -> (9,9,9). */
    bmp_head(&b, 3, 1, 8, 0, 2, 54 + 8);
    const uint8_t pal[] = {255, 0, 0, 0, 0, 0, 255, 0};   /* BGRX: blue, red */
    put(&b, pal, sizeof pal);
    const uint8_t row[] = {0, 1, 9, 0};
    put(&b, row, sizeof row);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "P");
    expect_px(&img, 0, 0, 0, 0, 255);
    expect_px(&img, 1, 0, 255, 0, 0);
    expect_px(&img, 2, 0, 9, 9, 9);
    vs_image_deinit(&img);
    /* 16-bit BI_BITFIELDS 5-6-5: 0xF800 -> red 255; 0x07E0 -> green 255. */
    b.n = 0;
    bmp_head(&b, 2, 1, 16, 3, 0, 54 + 12);
    put32le(&b, 0xF800);
    put32le(&b, 0x07E0);
    put32le(&b, 0x001F);
    put16le(&b, 0xF800);
    put16le(&b, 0x07E0);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    expect_px(&img, 0, 0, 255, 0, 0);
    expect_px(&img, 1, 0, 0, 255, 0);
    vs_image_deinit(&img);
    /* 2-bit and an unknown bit field layout are refused. */
    b.n = 0;
    bmp_head(&b, 4, 1, 2, 0, 0, 54 + 16);
    put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
    assert_int_equal(decode(&b, &img, &e), VS_UNSUPPORTED);
    b.n = 0;
    bmp_head(&b, 1, 1, 16, 3, 0, 54 + 12);
    put32le(&b, 0x0F00);
    put32le(&b, 0x00F0);
    put32le(&b, 0x000F);
    put32le(&b, 0);
    assert_int_equal(decode(&b, &img, &e), VS_UNSUPPORTED);
    free(b.p);
}

static void test_bmp_rle8(void **state)
{
    (void)state;
    struct vs_image img;
    struct vs_err e;
    struct buf b = {0};
    /* 4x2 RLE8 (bottom-up).  Bottom row: a run of 3 x index 1, then end
     * of line (pixel 3 padded with 0).  Top row: an absolute run 2,3,1,
     * padded to an even file offset, then a run of 1 x index 1; the image
     * is full there, so the end-of-bitmap code is never read. */
    bmp_head(&b, 4, 2, 8, 1, 4, 54 + 16);
    const uint8_t pal[] = {0, 0, 0, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0};
    put(&b, pal, sizeof pal);
    const uint8_t rle[] = {3, 1, 0, 0, 0, 3, 2, 3, 1, 0, 1, 1, 0, 1};
    put(&b, rle, sizeof rle);
    assert_int_equal(decode(&b, &img, &e), VS_OK);
    assert_string_equal(img.mode, "P");
    expect_px(&img, 0, 1, 255, 0, 0);
    expect_px(&img, 2, 1, 255, 0, 0);
    expect_px(&img, 3, 1, 0, 0, 0);
    expect_px(&img, 0, 0, 0, 255, 0);
    expect_px(&img, 1, 0, 0, 0, 255);
    expect_px(&img, 2, 0, 255, 0, 0);
    expect_px(&img, 3, 0, 255, 0, 0);
    vs_image_deinit(&img);
    /* End of bitmap before the last row: "not enough image data". */
    b.n = 0;
    bmp_head(&b, 4, 2, 8, 1, 4, 54 + 16);
    put(&b, pal, sizeof pal);
    const uint8_t early[] = {4, 1, 0, 1};
    put(&b, early, sizeof early);
    assert_int_equal(decode(&b, &img, &e), VS_BAD_INPUT);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_basic_and_idat_crc),
        cmocka_unit_test(test_png_ancillary_crc_rejects),
        cmocka_unit_test(test_png_unknown_critical_skipped_and_no_iend),
        cmocka_unit_test(test_png_ztxt_bomb),
        cmocka_unit_test(test_png_metadata_inflate_budget),
        cmocka_unit_test(test_png_truncated_idat_rejects),
        cmocka_unit_test(test_png_short_stream_and_extra_data),
        cmocka_unit_test(test_png_bit_depths),
        cmocka_unit_test(test_png_palette_rules),
        cmocka_unit_test(test_png_filters),
        cmocka_unit_test(test_png_adam7),
        cmocka_unit_test(test_png_metadata),
        cmocka_unit_test(test_png_limits_and_header),
        cmocka_unit_test(test_gif_frame_on_canvas),
        cmocka_unit_test(test_gif_truncation),
        cmocka_unit_test(test_bmp_24bit_orientation),
        cmocka_unit_test(test_bmp_palette_and_layouts),
        cmocka_unit_test(test_bmp_rle8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
