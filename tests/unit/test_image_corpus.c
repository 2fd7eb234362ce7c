/* test_image_corpus.c: vs_image_decode() against Pillow 9.4's verdict on
 * every file of $VS_SHARED/images (manifest.json) and on the 22 images of
 * the HF reference fixture ($VS_SHARED/fixtures/hf-reference/expected.json).
 *
 * For each corpus file, by its server_expectation:
 *   decode  vs_image_decode succeeds, the size equals pillow.size and the
 *           SHA-256 of our RGB buffer equals pillow.rgb_sha256;
 *   reject  a non-OK status with a non-empty message, the out-param left
 *           untouched (a DecompressionBombError on one of our formats must
 *           be VS_TOO_LARGE);
 *   either  OK with the matching size and hash, or a clean error.
 * The "either" files (bombs between Pillow's warning and error limits) are
 * decoded a second time with the limit raised to Pillow's error limit, so
 * that our pixels for them are checked as well.
 * Modes (Pillow's mode at open) and EXIF orientations are compared where the
 * format is one of ours; a difference there is reported but not a failure.
 *
 * Every mismatch is printed (file, expectation, what we got, our message)
 * before the test fails, followed by the line
 *   "corpus: N decode ok, M reject ok, K mismatches".
 * VS_CORPUS_FILTER=<substring> restricts the run to names containing it.
 * Single-threaded; everything it allocates is freed (ASan checks leaks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/vs.h"
#include "image/image.h"

/* Pillow's DecompressionBombError threshold (2 * MAX_IMAGE_PIXELS). */
#define PILLOW_BOMB_ERROR_PIXELS 178956970ull

struct tally {
    int decode_ok, reject_ok, either_ok, mismatches, mode_diffs, skipped;
};

static const char *shared_dir(void)
{
    const char *s = getenv("VS_SHARED");
    return (s && *s) ? s : "../shared";
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fprintf(stderr, "cannot parse %s: line %d: %s\n", path, jerr.line, jerr.text);
    return root;
}

/* Hex SHA-256 of the image's RGB buffer into hex[65]. */
static void rgb_hash(const struct vs_image *img, char hex[65])
{
    uint8_t d[32];
    vs_sha256(img->rgb, (size_t)img->width * (size_t)img->height * 3, d);
    vs_hex(d, 32, hex);
}

/* Is `fmt` (manifest "format": the real container) one we decode? */
static int ours(const char *fmt)
{
    static const char *const f[] = {"jpeg", "png", "webp", "gif", "bmp"};
    for (size_t i = 0; i < VS_ARRAY_LEN(f); i++)
        if (fmt && strcmp(fmt, f[i]) == 0) return 1;
    return 0;
}

/* Decodes one file; fills *img / *err / *st.  Returns 0 if the file could
 * not even be read (reported as a mismatch by the caller). */
static int decode_path(const char *path, uint64_t max_pixels, struct vs_image *img,
                       enum vs_status *st, struct vs_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    struct vs_err rerr = {0};
    if (vs_read_file(path, 0, &data, &len, &rerr) != VS_OK) {
        snprintf(err->msg, sizeof err->msg, "cannot read test file: %.400s", rerr.msg);
        return 0;
    }
    struct vs_image_limits lim = {.max_pixels = max_pixels};
    memset(img, 0, sizeof *img);
    *st = vs_image_decode(data, len, &lim, img, err);
    free(data);
    return 1;
}

/* Checks one manifest entry; prints and counts a mismatch. */
static void check_entry(json_t *f, uint64_t max_pixels, struct tally *t)
{
    const char *name = json_string_value(json_object_get(f, "name"));
    const char *expect = json_string_value(json_object_get(f, "server_expectation"));
    const char *format = json_string_value(json_object_get(f, "format"));
    json_t *pil = json_object_get(f, "pillow");
    assert_non_null(name);
    assert_non_null(expect);
    assert_non_null(pil);

    char path[4096];
    snprintf(path, sizeof path, "%s/images/%s", shared_dir(), name);
    struct vs_image img;
    struct vs_err err = {0};
    enum vs_status st = VS_IO;
    if (!decode_path(path, max_pixels, &img, &st, &err)) {
        printf("MISMATCH %s [%s]: %s\n", name, expect, err.msg);
        t->mismatches++;
        return;
    }

    char got[768];
    int good = 0;
    if (st == VS_OK) {
        json_t *size = json_object_get(pil, "size");
        const char *want = json_string_value(json_object_get(pil, "rgb_sha256"));
        long ww = (long)json_integer_value(json_array_get(size, 0));
        long wh = (long)json_integer_value(json_array_get(size, 1));
        char hex[65];
        rgb_hash(&img, hex);
        snprintf(got, sizeof got, "decoded %dx%d %s sha %.16s (pillow %ldx%ld %.16s)",
                 img.width, img.height, img.mode, hex, ww, wh, want ? want : "-");
        good = strcmp(expect, "reject") != 0 && want && img.width == ww &&
               img.height == wh && strcmp(hex, want) == 0;
        /* Mode / orientation: informational only. */
        const char *pmode = json_string_value(json_object_get(pil, "mode"));
        json_t *por = json_object_get(pil, "orientation");
        int pori = json_is_integer(por) ? (int)json_integer_value(por) : 0;
        if (pori < 1 || pori > 8) pori = 0;
        if (good && ours(format) && ((pmode && strcmp(pmode, img.mode) != 0) ||
                                     pori != img.orientation)) {
            printf("note %s: mode %s orientation %d, pillow mode %s orientation %d\n",
                   name, img.mode, img.orientation, pmode ? pmode : "-", pori);
            t->mode_diffs++;
        }
        vs_image_deinit(&img);
    } else {
        snprintf(got, sizeof got, "%s: %s", vs_status_name(st), err.msg);
        good = strcmp(expect, "decode") != 0 && err.msg[0] != '\0' && img.rgb == NULL;
        const char *cls = json_string_value(json_object_get(pil, "error_class"));
        if (good && cls && strcmp(cls, "DecompressionBombError") == 0 && ours(format) &&
            st != VS_TOO_LARGE)
            good = 0;
    }
    if (!good) {
        const char *perr = json_string_value(json_object_get(pil, "error"));
        printf("MISMATCH %s [%s, pillow: %s]: we %s\n", name, expect,
               perr ? perr : "ok", got);
        t->mismatches++;
    } else if (st == VS_OK && strcmp(expect, "decode") == 0) {
        t->decode_ok++;
    } else if (st == VS_OK) {
        t->either_ok++;
    } else {
        t->reject_ok++;
    }
}

static int selected(const char *name)
{
    const char *filt = getenv("VS_CORPUS_FILTER");
    return !filt || !*filt || (name && strstr(name, filt));
}

/* Every corpus file at the default pixel limit. */
static void test_corpus(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/images/manifest.json", shared_dir());
    json_t *root = load_json(path);
    assert_non_null(root);
    json_t *files = json_object_get(root, "files");
    assert_true(json_array_size(files) > 0);

    struct tally t = {0};
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        if (!selected(json_string_value(json_object_get(f, "name")))) {
            t.skipped++;
            continue;
        }
        check_entry(f, 0, &t);
    }
    printf("corpus: %d decode ok, %d reject ok, %d mismatches"
           " (%d either decoded, %d mode/orientation notes, %d filtered out)\n",
           t.decode_ok, t.reject_ok, t.mismatches, t.either_ok, t.mode_diffs, t.skipped);
    json_decref(root);
    fflush(stdout);
    assert_int_equal(t.mismatches, 0);
    /* The filter must not make the test vacuous. */
    assert_true(t.decode_ok + t.reject_ok + t.either_ok > 0);
}

/* The "either" files and Pillow's DecompressionBombError files again, with
 * our limit raised to Pillow's error limit: the former must then decode to
 * Pillow's pixels (or fail cleanly), the latter must still be refused. */
static void test_corpus_pillow_limit(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/images/manifest.json", shared_dir());
    json_t *root = load_json(path);
    assert_non_null(root);
    json_t *files = json_object_get(root, "files");
    struct tally t = {0};
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *expect = json_string_value(json_object_get(f, "server_expectation"));
        const char *cls = json_string_value(
            json_object_get(json_object_get(f, "pillow"), "error_class"));
        int bomb_err = cls && strcmp(cls, "DecompressionBombError") == 0;
        if (!selected(name) || !(strcmp(expect, "either") == 0 || bomb_err)) continue;
        check_entry(f, PILLOW_BOMB_ERROR_PIXELS, &t);
    }
    printf("corpus at pillow's limit: %d either decoded, %d reject ok, %d mismatches\n",
           t.either_ok, t.reject_ok, t.mismatches);
    json_decref(root);
    fflush(stdout);
    assert_int_equal(t.mismatches, 0);
}

/* The 22 fixture images: size and rgb_sha256 of `loaded`. */
static void test_fixture_images(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/hf-reference/expected.json", shared_dir());
    json_t *root = load_json(path);
    assert_non_null(root);
    json_t *images = json_object_get(root, "images");
    assert_int_equal(json_array_size(images), 22);
    int bad = 0, ok = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(images, i, rec) {
        const char *file = json_string_value(json_object_get(rec, "file"));
        json_t *loaded = json_object_get(rec, "loaded");
        const char *want = json_string_value(json_object_get(loaded, "rgb_sha256"));
        long ww = (long)json_integer_value(json_object_get(loaded, "width"));
        long wh = (long)json_integer_value(json_object_get(loaded, "height"));
        const char *pmode =
            json_string_value(json_object_get(json_object_get(rec, "decoded"), "mode"));
        assert_non_null(file);
        assert_non_null(want);
        if (!selected(file)) continue;
        snprintf(path, sizeof path, "%s/fixtures/hf-reference/%s", shared_dir(), file);
        struct vs_image img;
        struct vs_err err = {0};
        enum vs_status st = VS_IO;
        if (!decode_path(path, 0, &img, &st, &err) || st != VS_OK) {
            printf("MISMATCH fixture %s: %s\n", file, err.msg);
            bad++;
            continue;
        }
        char hex[65];
        rgb_hash(&img, hex);
        if (img.width != ww || img.height != wh || strcmp(hex, want) != 0) {
            printf("MISMATCH fixture %s: we %dx%d %.16s, pillow %ldx%ld %.16s\n", file,
                   img.width, img.height, hex, ww, wh, want);
            bad++;
        } else {
            ok++;
            if (pmode && strcmp(pmode, img.mode) != 0)
                printf("note fixture %s: mode %s, pillow %s\n", file, img.mode, pmode);
        }
        vs_image_deinit(&img);
    }
    printf("fixtures: %d ok, %d mismatches\n", ok, bad);
    json_decref(root);
    fflush(stdout);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_images),
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_corpus_pillow_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
