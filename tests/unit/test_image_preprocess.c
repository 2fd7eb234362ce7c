/* test_image_preprocess.c: vs_image_resize + vs_image_preprocess against
 * the transformers reference (shared/fixtures/hf-reference) and against
 * the rescale/normalize formula computed independently in double.
 *
 * Fixture test: every image with status "ok" (or a channels_last_variant)
 * is decoded with vs_image_decode, resized to the checkpoint's size and
 * compared by SHA-256 with resized_u8_sha256, then preprocessed with the
 * settings read here from model/preprocessor_config.json (independently of
 * the model loader) and compared with pixel_values/<stem>[.channels_last].f32.
 * A decoded image that already differs from Pillow's (rgb_sha256) is
 * reported as a decoder mismatch so a failure points at the right module.
 * Needs VS_SHARED; single-threaded.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/vs.h"
#include "image/image.h"

static const char *fixture_dir(void)
{
    static char dir[4096];
    const char *shared = getenv("VS_SHARED");
    snprintf(dir, sizeof dir, "%s/fixtures/hf-reference", shared ? shared : "../shared");
    return dir;
}

/* The checkpoint's ViTImageProcessor settings, read with jansson here. */
static void load_preproc(struct vs_preproc *p)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model/preprocessor_config.json", fixture_dir());
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s:%d: %s", path, je.line, je.text);
    memset(p, 0, sizeof *p);
    p->do_resize = json_is_true(json_object_get(j, "do_resize"));
    p->do_rescale = json_is_true(json_object_get(j, "do_rescale"));
    p->do_normalize = json_is_true(json_object_get(j, "do_normalize"));
    json_t *size = json_object_get(j, "size");
    p->height = (int)json_integer_value(json_object_get(size, "height"));
    p->width = (int)json_integer_value(json_object_get(size, "width"));
    p->resample = (enum vs_resample)json_integer_value(json_object_get(j, "resample"));
    p->rescale_factor = json_number_value(json_object_get(j, "rescale_factor"));
    for (int c = 0; c < 3; c++) {
        p->image_mean[c] = (float)json_number_value(json_array_get(json_object_get(j, "image_mean"), c));
        p->image_std[c] = (float)json_number_value(json_array_get(json_object_get(j, "image_std"), c));
    }
    json_decref(j);
    assert_true(p->do_resize && p->height > 0 && p->width > 0 && p->image_std[0] > 0);
}

static void sha_hex(const void *data, size_t len, char hex[65])
{
    uint8_t d[32];
    vs_sha256(data, len, d);
    vs_hex(d, 32, hex);
}

/* ---- the HF fixtures --------------------------------------------------- */

/* Checks one image; returns the number of problems (each printed). */
static int check_image(json_t *rec, const struct vs_preproc *p, int *checked, int *exact)
{
    const char *file = json_string_value(json_object_get(rec, "file"));
    const char *status = json_string_value(json_object_get(rec, "status"));
    json_t *variant = json_object_get(rec, "channels_last_variant");
    json_t *pv = variant ? json_object_get(variant, "pixel_values")
                         : json_object_get(rec, "pixel_values");
    if (!file || !status || (!variant && strcmp(status, "ok") != 0)) return 0;
    /* the pipeline's own resize of a height-3 image is HF's scrambled
     * channels-first guess: its hash does not describe our image */
    const char *want_resized = variant ? NULL
        : json_string_value(json_object_get(rec, "resized_u8_sha256"));
    const char *want_rgb = json_string_value(json_object_get(json_object_get(rec, "loaded"), "rgb_sha256"));
    const char *pv_file = json_string_value(json_object_get(pv, "file"));
    assert_non_null(pv_file);

    char path[4400];
    uint8_t *bytes = NULL, *ref = NULL;
    size_t nbytes = 0, nref = 0;
    struct vs_err err = {0};
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), file);
    assert_int_equal(vs_read_file(path, 0, &bytes, &nbytes, &err), VS_OK);
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), pv_file);
    assert_int_equal(vs_read_file(path, 0, &ref, &nref, &err), VS_OK);

    int problems = 0;
    struct vs_image img = {0};
    if (vs_image_decode(bytes, nbytes, NULL, &img, &err) != VS_OK) {
        printf("  %s: decode failed: %s\n", file, err.msg);
        problems++;
        goto out;
    }
    (*checked)++;
    char hex[65];
    sha_hex(img.rgb, (size_t)img.width * img.height * 3, hex);
    const bool decoded_same = want_rgb && !strcmp(hex, want_rgb);
    if (!decoded_same)
        printf("  %s: NOTE decoded RGB differs from Pillow's (decoder, not resize)\n", file);

    /* the resized uint8 image, HWC */
    size_t n = (size_t)p->width * p->height * 3;
    uint8_t *small = malloc(n);
    float *px = malloc(n * sizeof *px);
    assert_non_null(small);
    assert_non_null(px);
    assert_int_equal(vs_image_resize(img.rgb, img.width, img.height, small, p->width,
                                     p->height, p->resample, &err), VS_OK);
    if (want_resized) {
        sha_hex(small, n, hex);
        if (strcmp(hex, want_resized) != 0) {
            printf("  %s: resized u8 sha256 %s, Pillow %s\n", file, hex, want_resized);
            problems++;
        }
    }
    /* pixel_values */
    assert_int_equal(vs_image_preprocess(&img, p, px, &err), VS_OK);
    if (nref != n * sizeof(float)) {
        printf("  %s: %s has %zu bytes, expected %zu\n", file, pv_file, nref, n * sizeof(float));
        problems++;
    } else {
        double maxd = 0;
        size_t nd = 0;
        for (size_t i = 0; i < n; i++) {
            float r;
            memcpy(&r, ref + i * sizeof r, sizeof r);       /* little-endian host */
            double d = fabs((double)px[i] - (double)r);
            if (d > maxd) maxd = d;
            nd += px[i] != r;
        }
        *exact += nd == 0;
        if (maxd > 1e-6) {
            printf("  %s: pixel_values max |d| %.3g (%zu of %zu values differ)\n", file, maxd, nd, n);
            problems++;
        }
    }
    free(small);
    free(px);
out:
    vs_image_deinit(&img);
    free(bytes);
    free(ref);
    return problems;
}

static void test_fixture_images(void **state)
{
    (void)state;
    struct vs_preproc p;
    load_preproc(&p);
    char path[4200];
    snprintf(path, sizeof path, "%s/expected.json", fixture_dir());
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s:%d: %s", path, je.line, je.text);
    json_t *images = json_object_get(j, "images");
    assert_true(json_array_size(images) > 0);
    int problems = 0, checked = 0, exact = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(images, i, rec) problems += check_image(rec, &p, &checked, &exact);
    json_decref(j);
    printf("  %d fixture images decoded and compared, %d problems, %d bit-identical\n",
           checked, problems, exact);
    assert_int_equal(problems, 0);
    assert_int_equal(checked, 22);      /* 20 "ok" + 2 channels_last variants */
}

/* ---- the formula, against double arithmetic ---------------------------- */

/* A 256x1 image whose channels run through all 256 values (R = v,
 * G = 255 - v, B = 97 v mod 256), preprocessed without resizing. */
static void run_ramp(const struct vs_preproc *p, float *out /* (3, 1, 256) */)
{
    uint8_t rgb[256 * 3];
    for (int v = 0; v < 256; v++) {
        rgb[3 * v] = (uint8_t)v;
        rgb[3 * v + 1] = (uint8_t)(255 - v);
        rgb[3 * v + 2] = (uint8_t)((97 * v) & 255);
    }
    struct vs_image img = {.width = 256, .height = 1, .rgb = rgb};
    struct vs_err err = {0};
    assert_int_equal(vs_image_preprocess(&img, p, out, &err), VS_OK);
}

static int ramp_value(int c, int i)
{
    return c == 0 ? i : c == 1 ? 255 - i : (97 * i) & 255;
}

static void test_rescale_is_rounded_once(void **state)
{
    (void)state;
    struct vs_preproc p = {.do_rescale = true, .rescale_factor = 1.0 / 255};
    float out[3 * 256];
    run_ramp(&p, out);
    int differs_from_float_mul = 0;
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < 256; i++) {
            int v = ramp_value(c, i);
            float got = out[c * 256 + i];
            /* the exact value v/255, rounded once: equals the float division */
            assert_true(got == (float)v / 255.0f);
            /* and within half an ulp of the real number */
            double exact = v / 255.0;
            assert_true(fabs((double)got - exact) <= 0.5 * FLT_EPSILON * fmax(exact, FLT_MIN));
            volatile float inv = 1.0f / 255;
            differs_from_float_mul += got != (float)v * inv;
        }
    }
    /* README: u8 * (1.0f/255) in float differs in 126 of 256 values */
    assert_int_equal(differs_from_float_mul, 3 * 126);
}

static void test_normalize_divides(void **state)
{
    (void)state;
    /* ImageNet constants: x * (1/std) and (x - mean) / std differ here */
    struct vs_preproc p = {.do_rescale = true, .rescale_factor = 1.0 / 255, .do_normalize = true,
                           .image_mean = {0.485f, 0.456f, 0.406f},
                           .image_std = {0.229f, 0.224f, 0.225f}};
    float out[3 * 256];
    run_ramp(&p, out);
    int reciprocal_differs = 0;
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < 256; i++) {
            int v = ramp_value(c, i);
            float x = (float)(v * p.rescale_factor);
            /* double reference: float x minus float mean is exact in double,
             * the quotient rounded once to float must be within 1 ulp */
            double y = ((double)x - (double)p.image_mean[c]) / (double)p.image_std[c];
            float got = out[c * 256 + i];
            assert_true(fabs((double)got - y) <= FLT_EPSILON * fmax(fabs(y), 1e-30) + 1e-12);
            volatile float d = x - p.image_mean[c], s = p.image_std[c];
            assert_true(got == d / s);
            volatile float inv = 1.0f / s;
            reciprocal_differs += got != d * inv;
        }
    }
    assert_true(reciprocal_differs > 0);
}

static void test_no_rescale_no_normalize(void **state)
{
    (void)state;
    struct vs_preproc p = {0};
    float out[3 * 256];
    run_ramp(&p, out);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++) assert_true(out[c * 256 + i] == (float)ramp_value(c, i));
}

/* ---- resize properties and error paths --------------------------------- */

static void test_resize_identity_and_constant(void **state)
{
    (void)state;
    enum { SW = 23, SH = 17 };
    uint8_t src[SW * SH * 3], dst[SW * SH * 3], big[41 * 9 * 3];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37 + (i >> 3));
    struct vs_err err = {0};
    for (int f = 0; f <= 5; f++) {
        memset(dst, 0xAA, sizeof dst);
        assert_int_equal(vs_image_resize(src, SW, SH, dst, SW, SH, (enum vs_resample)f, &err), VS_OK);
        assert_memory_equal(src, dst, sizeof src);
    }
    /* weights sum to one: a flat image stays flat, whatever the filter */
    memset(src, 201, sizeof src);
    for (int f = 0; f <= 5; f++) {
        assert_int_equal(vs_image_resize(src, SW, SH, big, 41, 9, (enum vs_resample)f, &err), VS_OK);
        for (size_t i = 0; i < sizeof big; i++) assert_int_equal(big[i], 201);
    }
}

static void test_resize_errors(void **state)
{
    (void)state;
    uint8_t src[4 * 4 * 3] = {0}, dst[200 * 3];
    struct vs_err err = {0};
    assert_int_equal(vs_image_resize(src, 4, 4, dst, 2, 2, (enum vs_resample)6, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "6"));
    assert_int_equal(vs_image_resize(src, 4, 4, dst, 2, 2, (enum vs_resample)-1, &err), VS_BAD_INPUT);
    /* Pillow refuses a bad filter even when the size does not change */
    assert_int_equal(vs_image_resize(src, 4, 4, dst, 4, 4, (enum vs_resample)9, &err), VS_BAD_INPUT);
    assert_int_equal(vs_image_resize(src, 4, 4, dst, 0, 2, VS_RESAMPLE_BILINEAR, &err), VS_BAD_INPUT);
    assert_int_equal(vs_image_resize(src, 4, 0, dst, 2, 2, VS_RESAMPLE_BILINEAR, &err), VS_BAD_INPUT);

    /* Pillow 9.4 raises MemoryError for a weight table over INT_MAX bytes
     * (checked: Image.new("RGB", (50_000_000, 1)).resize((200, 1), LANCZOS));
     * BILINEAR's smaller support stays under it.  Refused before any pixel
     * is read, so the (lazily zeroed) buffer is never touched. */
    uint8_t *wide = calloc((size_t)50000000 * 3, 1);
    assert_non_null(wide);
    assert_int_equal(vs_image_resize(wide, 50000000, 1, dst, 200, 1, VS_RESAMPLE_LANCZOS, &err),
                     VS_TOO_LARGE);
    assert_non_null(strstr(err.msg, "50000000"));
    free(wide);

    struct vs_image img = {.width = 4, .height = 4, .rgb = src};
    float out[3 * 4 * 4];
    struct vs_preproc p = {.do_resize = true, .width = 4, .height = 0};
    assert_int_equal(vs_image_preprocess(&img, &p, out, &err), VS_BAD_INPUT);
    p.height = 4;
    p.resample = (enum vs_resample)7;
    assert_int_equal(vs_image_preprocess(&img, &p, out, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "7"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rescale_is_rounded_once),
        cmocka_unit_test(test_normalize_divides),
        cmocka_unit_test(test_no_rescale_no_normalize),
        cmocka_unit_test(test_resize_identity_and_constant),
        cmocka_unit_test(test_resize_errors),
        cmocka_unit_test(test_fixture_images),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
