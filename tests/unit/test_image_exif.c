/* test_image_exif.c: EXIF orientation (vs_exif_orientation,
 * vs_exif_check_header), exif_transpose (vs_orient_apply), the pixel-limit
 * check and format sniffing, on hand-built inputs.
 *
 * The expected values are Pillow 9.4's behaviour, stated in the comments
 * (Image.Exif.load / ImageFileDirectory_v2.load for the tag reading,
 * Image.transpose for the transforms), not our own output.  The last tests
 * encode a small JPEG with libjpeg-turbo, splice an EXIF APP1 into it and
 * check that vs_image_decode applies (or refuses) it as Pillow would.
 * Single-threaded; no files, no environment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jpeglib.h>

#include "common/vs.h"
#include "image/decoders.h"
#include "image/image.h"

/* ---- a tiny TIFF/EXIF writer ------------------------------------------ */

struct blk {
    uint8_t b[512];
    size_t n;
    int big;
};

static void put16(struct blk *k, size_t at, uint32_t v)
{
    if (k->big) { k->b[at] = (uint8_t)(v >> 8); k->b[at + 1] = (uint8_t)v; }
    else { k->b[at] = (uint8_t)v; k->b[at + 1] = (uint8_t)(v >> 8); }
}

static void put32(struct blk *k, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        k->b[at + (size_t)i] = (uint8_t)(v >> (k->big ? 24 - 8 * i : 8 * i));
}

/* TIFF header + IFD0 at offset 8 with `n` entry slots (filled by entry()),
 * next-IFD pointer 0.  Returns the size so far. */
static void tiff_begin(struct blk *k, int big, unsigned n)
{
    memset(k, 0, sizeof *k);
    k->big = big;
    memcpy(k->b, big ? "MM\0*" : "II*\0", 4);
    put32(k, 4, 8);
    put16(k, 8, n);
    k->n = 8 + 2 + 12 * (size_t)n + 4;
}

/* Entry i of IFD0: tag, type, count, 4-byte inline value/offset. */
static void entry(struct blk *k, unsigned i, uint32_t tag, uint32_t type, uint32_t count,
                  uint32_t value)
{
    size_t at = 10 + 12 * (size_t)i;
    put16(k, at, tag);
    put16(k, at + 2, type);
    put32(k, at + 4, count);
    put32(k, at + 8, value);
}

/* SHORT values sit in the first two bytes of the 4-byte field. */
static uint32_t short_inline(const struct blk *k, uint32_t v)
{
    return k->big ? v << 16 : v;
}

/* ---- vs_exif_orientation ---------------------------------------------- */

static void test_short_both_endiannesses(void **state)
{
    (void)state;
    struct blk k;
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 6));
    assert_int_equal(vs_exif_orientation(k.b, k.n), 6);
    tiff_begin(&k, 1, 1);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 3));
    assert_int_equal(vs_exif_orientation(k.b, k.n), 3);
    /* Big endian read as little endian would give 3 << 8: check it is not. */
    assert_int_equal(vs_exif_check_header(k.b, k.n), VS_EXIF_OK);
}

static void test_exif_prefix_and_other_tags(void **state)
{
    (void)state;
    struct blk k;
    tiff_begin(&k, 0, 3);
    entry(&k, 0, 0x010F, 2, 4, 0x00434241);          /* Make "ABC" inline */
    entry(&k, 1, 0x0112, 3, 1, short_inline(&k, 8));
    entry(&k, 2, 0x0128, 3, 1, short_inline(&k, 2));
    uint8_t buf[600];
    memcpy(buf, "Exif\0\0", 6);
    memcpy(buf + 6, k.b, k.n);
    assert_int_equal(vs_exif_orientation(buf, k.n + 6), 8);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 8);
}

static void test_long_and_numeric_types(void **state)
{
    (void)state;
    struct blk k;
    tiff_begin(&k, 1, 1);
    entry(&k, 0, 0x0112, 4, 1, 6);                   /* LONG */
    assert_int_equal(vs_exif_orientation(k.b, k.n), 6);
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 8, 1, short_inline(&k, 5)); /* SSHORT */
    assert_int_equal(vs_exif_orientation(k.b, k.n), 5);
    /* SHORT[2] = {7, 3}: Pillow keeps the first value. */
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 3, 2, 7u | 3u << 16);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 7);
    /* BYTE and UNDEFINED come out of Pillow as bytes: never an orientation. */
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 1, 1, 6);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 7, 1, 6);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    /* RATIONAL out of line: 12/2 == 6 matches, 13/2 does not. */
    tiff_begin(&k, 0, 1);
    size_t off = k.n;
    entry(&k, 0, 0x0112, 5, 1, (uint32_t)off);
    put32(&k, off, 12);
    put32(&k, off + 4, 2);
    k.n = off + 8;
    assert_int_equal(vs_exif_orientation(k.b, k.n), 6);
    put32(&k, off, 13);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
}

static void test_truncated_and_corrupt_ifd(void **state)
{
    (void)state;
    struct blk k;
    /* IFD0 declares 3 entries, the block ends inside the 2nd: the 1st
     * (orientation) is kept, as Pillow warns "Corrupt EXIF" and keeps it. */
    tiff_begin(&k, 0, 3);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 6));
    entry(&k, 1, 0x0110, 2, 4, 0);
    assert_int_equal(vs_exif_orientation(k.b, 10 + 12 + 5), 6);
    /* Orientation in the entry that is cut: nothing. */
    tiff_begin(&k, 0, 2);
    entry(&k, 0, 0x010F, 2, 2, 0x41);
    entry(&k, 1, 0x0112, 3, 1, short_inline(&k, 6));
    assert_int_equal(vs_exif_orientation(k.b, 10 + 12 + 11), 0);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 6);
    /* An out-of-line value outside the block stops the scan there: tags
     * before it survive, tags after it are lost. */
    tiff_begin(&k, 0, 2);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 3));
    entry(&k, 1, 0x010F, 2, 100, 4000);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 3);
    tiff_begin(&k, 0, 2);
    entry(&k, 0, 0x010F, 2, 100, 4000);
    entry(&k, 1, 0x0112, 3, 1, short_inline(&k, 3));
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    /* IFD0 offset past the end, or a huge offset: nothing, no crash. */
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 6));
    put32(&k, 4, (uint32_t)k.n);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    put32(&k, 4, 0xFFFFFFF0u);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    /* Unknown type and count 0 are skipped; a later duplicate replaces. */
    tiff_begin(&k, 0, 4);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, 2));
    entry(&k, 1, 0x0112, 99, 1, 7);
    entry(&k, 2, 0x0112, 3, 0, 7);
    assert_int_equal(vs_exif_orientation(k.b, k.n), 2);
    entry(&k, 3, 0x0112, 3, 1, short_inline(&k, 4));
    assert_int_equal(vs_exif_orientation(k.b, k.n), 4);
}

static void test_ifd1_only_and_out_of_range_values(void **state)
{
    (void)state;
    struct blk k;
    /* IFD0 without orientation, IFD1 (thumbnail) with it: ignored. */
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0100, 3, 1, short_inline(&k, 16));
    size_t ifd1 = k.n;
    put32(&k, ifd1 - 4, (uint32_t)ifd1);
    put16(&k, ifd1, 1);
    put16(&k, ifd1 + 2, 0x0112);
    put16(&k, ifd1 + 4, 3);
    put32(&k, ifd1 + 6, 1);
    put16(&k, ifd1 + 10, 6);
    k.n = ifd1 + 2 + 12 + 4;
    assert_int_equal(vs_exif_orientation(k.b, k.n), 0);
    /* 0, 9 and 255 are read as such (exif_transpose then leaves them). */
    const uint32_t vals[] = {0, 9, 255};
    for (size_t i = 0; i < VS_ARRAY_LEN(vals); i++) {
        tiff_begin(&k, 0, 1);
        entry(&k, 0, 0x0112, 3, 1, short_inline(&k, vals[i]));
        assert_int_equal(vs_exif_orientation(k.b, k.n), (int)vals[i]);
    }
}

static void test_header_verdicts(void **state)
{
    (void)state;
    assert_int_equal(vs_exif_check_header(NULL, 0), VS_EXIF_OK);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"Exif\0\0", 6), VS_EXIF_OK);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"XXXXXXXXXX", 10), VS_EXIF_NOT_TIFF);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"II", 2), VS_EXIF_NOT_TIFF);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"II*\0\x08\0", 6),
                     VS_EXIF_SHORT_HEADER);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"MM\0+\0\x08\0\0\0\0\0\0\0\0\0\x10", 16),
                     VS_EXIF_SHORT_HEADER);
    assert_int_equal(vs_exif_check_header((const uint8_t *)"MM*\0\0\0\0\x08", 8), VS_EXIF_OK);
    assert_int_equal(vs_exif_orientation((const uint8_t *)"II*\0\x08\0", 6), 0);
    assert_int_equal(vs_exif_orientation(NULL, 100), 0);
}

/* ---- vs_orient_apply -------------------------------------------------- */

/* Source 3x2:  a b c / d e f  (R = letter, G = R+1, B = R+2).  Expected
 * letters per orientation, from Pillow's Image.transpose of this image. */
static void test_orient_apply_all(void **state)
{
    (void)state;
    static const struct { int o, w, h; const char *px; } want[] = {
        {2, 3, 2, "cbafed"}, {3, 3, 2, "fedcba"}, {4, 3, 2, "defabc"},
        {5, 2, 3, "adbecf"}, {6, 2, 3, "daebfc"}, {7, 2, 3, "fcebda"},
        {8, 2, 3, "cfbead"},
    };
    uint8_t src[18];
    for (int i = 0; i < 6; i++) {
        src[i * 3] = (uint8_t)('a' + i);
        src[i * 3 + 1] = (uint8_t)('a' + i + 1);
        src[i * 3 + 2] = (uint8_t)('a' + i + 2);
    }
    for (size_t t = 0; t < VS_ARRAY_LEN(want); t++) {
        int ow = -1, oh = -1;
        uint8_t *out = vs_orient_apply(src, 3, 2, want[t].o, &ow, &oh);
        assert_non_null(out);
        assert_int_equal(ow, want[t].w);
        assert_int_equal(oh, want[t].h);
        for (int i = 0; i < 6; i++) {
            assert_int_equal(out[i * 3], (uint8_t)want[t].px[i]);
            assert_int_equal(out[i * 3 + 1], (uint8_t)(want[t].px[i] + 1));
            assert_int_equal(out[i * 3 + 2], (uint8_t)(want[t].px[i] + 2));
        }
        free(out);
    }
    int ow, oh;
    assert_null(vs_orient_apply(src, 3, 2, 1, &ow, &oh));
    assert_null(vs_orient_apply(src, 3, 2, 9, &ow, &oh));
}

/* ---- pixel limit and sniffing ----------------------------------------- */

static void test_check_pixels(void **state)
{
    (void)state;
    struct vs_err err = {0};
    /* Pillow: 9459x9459 passes, 9460x9460 is over MAX_IMAGE_PIXELS. */
    assert_int_equal(vs_decode_check_pixels("PNG", 9459, 9459, NULL, &err), VS_OK);
    assert_int_equal(vs_decode_check_pixels("PNG", 9460, 9460, NULL, &err), VS_TOO_LARGE);
    assert_non_null(strstr(err.msg, "9460x9460"));
    assert_non_null(strstr(err.msg, "89478485"));
    struct vs_image_limits lim = {.max_pixels = 100};
    assert_int_equal(vs_decode_check_pixels("X", 10, 10, &lim, &err), VS_OK);
    assert_int_equal(vs_decode_check_pixels("X", 10, 11, &lim, &err), VS_TOO_LARGE);
    /* w*h overflowing 64 bits must not wrap to a small number. */
    assert_int_equal(vs_decode_check_pixels("X", 1ull << 33, 1ull << 33, NULL, &err),
                     VS_TOO_LARGE);
}

static void test_sniff(void **state)
{
    (void)state;
    const uint8_t *u = (const uint8_t *)"";
    assert_int_equal(vs_image_sniff((const uint8_t *)"\xFF\xD8\xFF\xE0", 4), VS_IMAGE_JPEG);
    assert_int_equal(vs_image_sniff((const uint8_t *)"\xFF\xD8\xFE", 3), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff((const uint8_t *)"\x89PNG\r\n\x1A\n", 8), VS_IMAGE_PNG);
    assert_int_equal(vs_image_sniff((const uint8_t *)"\x89PNG\r\n\x1A", 7), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff((const uint8_t *)"GIF89a", 6), VS_IMAGE_GIF);
    assert_int_equal(vs_image_sniff((const uint8_t *)"GIF87a", 6), VS_IMAGE_GIF);
    assert_int_equal(vs_image_sniff((const uint8_t *)"GIF88a", 6), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff((const uint8_t *)"BM", 2), VS_IMAGE_BMP);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8L", 16), VS_IMAGE_WEBP);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16), VS_IMAGE_WEBP);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8X", 16), VS_IMAGE_WEBP);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPABCD", 16), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WAVEfmt ", 16), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBP", 12), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff(u, 0), VS_IMAGE_UNKNOWN);
    assert_int_equal(vs_image_sniff(NULL, 10), VS_IMAGE_UNKNOWN);
    assert_string_equal(vs_image_format_name(VS_IMAGE_WEBP), "WEBP");
    assert_string_equal(vs_image_format_name(VS_IMAGE_UNKNOWN), "unknown");

    struct vs_image img;
    memset(&img, 0, sizeof img);
    struct vs_err err = {0};
    assert_int_equal(vs_image_decode((const uint8_t *)"hello world", 11, NULL, &img, &err),
                     VS_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "unrecognized image format"));
    assert_null(img.rgb);
    assert_int_equal(vs_image_decode(NULL, 0, NULL, &img, &err), VS_UNSUPPORTED);
}

/* ---- end to end through the JPEG decoder ------------------------------ */

/* A 24x16 RGB JPEG (q100, 4:4:4) with an optional APP1 payload; JFIF
 * density unit 1 (dpi) when `dpi`.  Returns a malloc'd buffer. */
static uint8_t *make_jpeg(const uint8_t *app1, size_t app1_len, int dpi, size_t *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = 24;
    c.image_height = 16;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    for (int i = 0; i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    c.density_unit = (UINT8)(dpi ? 1 : 0);
    c.X_density = c.Y_density = 72;
    jpeg_start_compress(&c, TRUE);
    if (app1) jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)app1_len);
    uint8_t row[24 * 3];
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < 24; x++) {
            row[x * 3] = (uint8_t)(x * 10);
            row[x * 3 + 1] = (uint8_t)(c.next_scanline * 15);
            row[x * 3 + 2] = (uint8_t)((x * 7 + c.next_scanline * 3) & 255);
        }
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    uint8_t *out = malloc(n);
    assert_non_null(out);
    memcpy(out, buf, n);
    free(buf);
    *len = n;
    return out;
}

/* "Exif\0\0" + little-endian TIFF with orientation o. */
static size_t exif_app1(uint8_t *dst, int o)
{
    struct blk k;
    tiff_begin(&k, 0, 1);
    entry(&k, 0, 0x0112, 3, 1, short_inline(&k, (uint32_t)o));
    memcpy(dst, "Exif\0\0", 6);
    memcpy(dst + 6, k.b, k.n);
    return k.n + 6;
}

static void test_jpeg_orientation_applied(void **state)
{
    (void)state;
    size_t len0;
    uint8_t *plain = make_jpeg(NULL, 0, 0, &len0);
    struct vs_image base;
    struct vs_err err = {0};
    assert_int_equal(vs_image_decode(plain, len0, NULL, &base, &err), VS_OK);
    assert_int_equal(base.width, 24);
    assert_int_equal(base.height, 16);
    assert_string_equal(base.mode, "RGB");
    assert_int_equal(base.orientation, 0);
    for (int o = 1; o <= 9; o++) {
        uint8_t app1[128];
        size_t alen = exif_app1(app1, o);
        size_t len;
        uint8_t *jpg = make_jpeg(app1, alen, 0, &len);
        struct vs_image img;
        assert_int_equal(vs_image_decode(jpg, len, NULL, &img, &err), VS_OK);
        assert_int_equal(img.stored_width, 24);
        assert_int_equal(img.stored_height, 16);
        if (o >= 2 && o <= 8) {
            int ow, oh;
            uint8_t *want = vs_orient_apply(base.rgb, 24, 16, o, &ow, &oh);
            assert_non_null(want);
            assert_int_equal(img.width, ow);
            assert_int_equal(img.height, oh);
            assert_int_equal(img.width, o >= 5 ? 16 : 24);
            assert_memory_equal(img.rgb, want, (size_t)ow * oh * 3);
            free(want);
        } else {   /* 1 and 9: the image as stored */
            assert_int_equal(img.width, 24);
            assert_memory_equal(img.rgb, base.rgb, 24 * 16 * 3);
        }
        assert_int_equal(img.orientation, o <= 8 ? o : 0);
        vs_image_deinit(&img);
        vs_image_deinit(&img);   /* twice is safe */
        free(jpg);
    }
    vs_image_deinit(&base);
    free(plain);
}

static void test_jpeg_bad_exif_header(void **state)
{
    (void)state;
    struct vs_err err = {0};
    struct vs_image img;
    size_t len;
    /* Not a TIFF: Pillow's open swallows the SyntaxError (no "dpi" yet) and
     * decodes without orientation... */
    uint8_t junk[] = "Exif\0\0JUNKJUNKJUNK";
    uint8_t *jpg = make_jpeg(junk, sizeof junk - 1, 0, &len);
    assert_int_equal(vs_image_decode(jpg, len, NULL, &img, &err), VS_OK);
    assert_int_equal(img.orientation, 0);
    vs_image_deinit(&img);
    free(jpg);
    /* ...but with a JFIF dpi unit first, exif_transpose raises it. */
    jpg = make_jpeg(junk, sizeof junk - 1, 1, &len);
    memset(&img, 0, sizeof img);
    assert_int_not_equal(vs_image_decode(jpg, len, NULL, &img, &err), VS_OK);
    assert_non_null(strstr(err.msg, "EXIF"));
    assert_null(img.rgb);
    free(jpg);
    /* A TIFF prefix cut short: struct.error at open, never identified. */
    uint8_t shorthdr[] = "Exif\0\0MM\0*\0\0\0";
    jpg = make_jpeg(shorthdr, sizeof shorthdr - 1, 0, &len);
    assert_int_equal(vs_image_decode(jpg, len, NULL, &img, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "EXIF"));
    free(jpg);
}

static void test_jpeg_truncation_and_limit(void **state)
{
    (void)state;
    struct vs_err err = {0};
    struct vs_image img;
    size_t len;
    uint8_t *jpg = make_jpeg(NULL, 0, 0, &len);
    assert_true(jpg[len - 2] == 0xFF && jpg[len - 1] == 0xD9);
    /* Only the EOI missing: Pillow still says "truncated". */
    assert_int_equal(vs_image_decode(jpg, len - 2, NULL, &img, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "truncated"));
    /* Limit below 24*16. */
    struct vs_image_limits lim = {.max_pixels = 24 * 16 - 1};
    assert_int_equal(vs_image_decode(jpg, len, &lim, &img, &err), VS_TOO_LARGE);
    assert_non_null(strstr(err.msg, "24x16"));
    lim.max_pixels = 24 * 16;
    assert_int_equal(vs_image_decode(jpg, len, &lim, &img, &err), VS_OK);
    vs_image_deinit(&img);
    /* Every prefix of the file fails cleanly (and never crashes). */
    for (size_t cut = 0; cut < len - 2; cut += 7) {
        memset(&img, 0, sizeof img);
        assert_int_not_equal(vs_image_decode(jpg, cut, NULL, &img, &err), VS_OK);
        assert_true(err.msg[0] != '\0');
        assert_null(img.rgb);
    }
    free(jpg);
}

/* JpegImageFile._open looks for a resolution in the EXIF while no JFIF
 * dpi is known: with ResolutionUnit present it computes
 * float(x_resolution[0]) / x_resolution[1] and catches TypeError,
 * KeyError, SyntaxError, ValueError and ZeroDivisionError, not
 * IndexError.  An XResolution that Pillow hands back as a one-byte bytes
 * (BYTE/UNDEFINED, count 1) or as a str of one digit or none (ASCII)
 * raises IndexError there, and Image.open reports "cannot identify image
 * file".  Other shapes are caught (dpi 72) and the image decodes. */
static int decode_with_xres(uint32_t type, uint32_t count, const char *val, int unit, int dpi)
{
    struct blk k;
    tiff_begin(&k, 0, unit ? 2 : 1);
    uint32_t v = 0;
    memcpy(&v, val, strlen(val) < 4 ? strlen(val) : 4);   /* little-endian inline bytes */
    entry(&k, 0, 0x011A, type, count, v);
    if (unit) entry(&k, 1, 0x0128, 3, 1, short_inline(&k, 2));
    uint8_t app1[600];
    memcpy(app1, "Exif\0\0", 6);
    memcpy(app1 + 6, k.b, k.n);
    size_t len;
    uint8_t *jpg = make_jpeg(app1, k.n + 6, dpi, &len);
    struct vs_image img;
    memset(&img, 0, sizeof img);
    struct vs_err err = {0};
    enum vs_status st = vs_image_decode(jpg, len, NULL, &img, &err);
    if (st == VS_OK) vs_image_deinit(&img);
    else {
        assert_int_equal(st, VS_BAD_INPUT);
        assert_non_null(strstr(err.msg, "XResolution"));
    }
    free(jpg);
    return st == VS_OK;
}

static void test_jpeg_exif_resolution_indexerror(void **state)
{
    (void)state;
    /* IndexError in Pillow: not identified. */
    assert_false(decode_with_xres(1, 1, "\x05", 1, 0));     /* BYTE, 1 value */
    assert_false(decode_with_xres(7, 1, "\x05", 1, 0));     /* UNDEFINED, 1 byte */
    assert_false(decode_with_xres(2, 2, "5", 1, 0));        /* ASCII "5\0" -> "5" */
    assert_false(decode_with_xres(2, 1, "7", 1, 0));        /* ASCII "7" */
    assert_false(decode_with_xres(2, 1, "", 1, 0));         /* ASCII "\0" -> "" */
    /* Caught by Pillow: decodes. */
    assert_true(decode_with_xres(1, 2, "\x05\x01", 1, 0));  /* 5 / 1 */
    assert_true(decode_with_xres(1, 2, "\x05", 1, 0));      /* 5 / 0: ZeroDivisionError */
    assert_true(decode_with_xres(2, 2, "a", 1, 0));         /* float("a"): ValueError */
    assert_true(decode_with_xres(2, 3, "55", 1, 0));        /* 5.0 / "5": TypeError */
    assert_true(decode_with_xres(2, 2, "", 1, 0));          /* "\0": ValueError */
    assert_true(decode_with_xres(3, 1, "\x48", 1, 0));      /* SHORT: int[0] TypeError */
    assert_true(decode_with_xres(1, 1, "\x05", 0, 0));      /* no ResolutionUnit: KeyError */
    assert_true(decode_with_xres(1, 1, "\x05", 1, 1));      /* JFIF dpi known: not looked at */
}

/* After the last row Pillow calls jpeg_finish_decompress on the data
 * ImageFile.load has read so far (64 KiB reads from the file start) and
 * takes a suspension there as success: a marker libjpeg refuses between
 * the scan and EOI (here a second SOF) fails only when libjpeg can read
 * enough of it within the 64 KiB read that completed the rows.  (Each
 * case checked against Pillow 9.4.) */
static void test_jpeg_bad_marker_after_rows(void **state)
{
    (void)state;
    size_t len;
    uint8_t *jpg = make_jpeg(NULL, 0, 0, &len);
    struct vs_image base, img;
    struct vs_err err = {0};
    assert_int_equal(vs_image_decode(jpg, len, NULL, &base, &err), VS_OK);
    size_t body = len - 2;                         /* without EOI */
    size_t sof_at = 0, sof_len = 0;
    for (size_t i = 2; i + 4 < len; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {
            sof_at = i;
            sof_len = 2 + ((size_t)jpg[i + 2] << 8 | jpg[i + 3]);
            break;
        }
    assert_true(sof_len > 0);
    const size_t big = 70000;
    uint8_t *f = calloc(body + big + sof_len + 2 + big, 1);
    assert_non_null(f);
    /* zero-filled gap of `gap` bytes, the SOF again, `tail` zero bytes, EOI */
    struct { size_t gap, tail; int ok; } cases[] = {
        {0, 0, 0},                       /* small file: all of it is read at once */
        {1000, big, 0},                  /* within the first 64 KiB read */
        {big, 0, 1},                     /* beyond it: never looked at */
        {65536 - body, 0, 1},            /* starts right at the 64 KiB boundary */
        {65535 - body, 0, 1},            /* its 0xFF is the last byte of the read */
        {65530 - body, 0, 1},            /* its height field cut by the boundary */
        {0, 0, 0},                       /* (filled below) */
    };
    /* only its last byte past the boundary: libjpeg has read enough to refuse */
    cases[VS_ARRAY_LEN(cases) - 1].gap = 65536 - body - sof_len + 1;
    for (size_t c = 0; c < VS_ARRAY_LEN(cases); c++) {
        size_t n = 0;
        memcpy(f, jpg, body);
        n = body;
        memset(f + n, 0, cases[c].gap);
        n += cases[c].gap;
        memcpy(f + n, jpg + sof_at, sof_len);
        n += sof_len;
        memset(f + n, 0, cases[c].tail);
        n += cases[c].tail;
        f[n++] = 0xFF;
        f[n++] = 0xD9;
        memset(&img, 0, sizeof img);
        enum vs_status st = vs_image_decode(f, n, NULL, &img, &err);
        if (cases[c].ok) {
            assert_int_equal(st, VS_OK);
            assert_memory_equal(img.rgb, base.rgb, 24 * 16 * 3);
            vs_image_deinit(&img);
        } else {
            assert_int_equal(st, VS_BAD_INPUT);
            assert_non_null(strstr(err.msg, "SOF"));
        }
    }
    free(f);
    vs_image_deinit(&base);
    free(jpg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_both_endiannesses),
        cmocka_unit_test(test_exif_prefix_and_other_tags),
        cmocka_unit_test(test_long_and_numeric_types),
        cmocka_unit_test(test_truncated_and_corrupt_ifd),
        cmocka_unit_test(test_ifd1_only_and_out_of_range_values),
        cmocka_unit_test(test_header_verdicts),
        cmocka_unit_test(test_orient_apply_all),
        cmocka_unit_test(test_check_pixels),
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_jpeg_orientation_applied),
        cmocka_unit_test(test_jpeg_bad_exif_header),
        cmocka_unit_test(test_jpeg_truncation_and_limit),
        cmocka_unit_test(test_jpeg_exif_resolution_indexerror),
        cmocka_unit_test(test_jpeg_bad_marker_after_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
