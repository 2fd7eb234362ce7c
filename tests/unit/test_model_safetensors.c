/* test_model_safetensors.c: the safetensors reader refuses every kind of
 * malformed file with a message naming the file and the tensor/problem,
 * and never crashes (run under ASan+UBSan too).  Malformed files are
 * generated into $VS_TMP: either written from scratch (header-level
 * faults) or by rewriting the header of a valid checkpoint made by
 * vs-gen_vit (model-level faults: missing tensor, wrong shape, dtype).
 * Also checks the F16/BF16 conversions against exactly known values.
 * Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "vst_msg.h"

#include <jansson.h>

#include "model/model.h"
#include "model/safetensors.h"

static char tmpdir[1024];

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Writes [N as u64 LE][header bytes][data_len bytes of 0x3f]. */
static void write_raw(const char *path, uint64_t n, const char *header, size_t header_len,
                      size_t data_len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    assert_int_equal(fwrite(b, 1, 8, f), 8);
    if (header_len) assert_int_equal(fwrite(header, 1, header_len, f), header_len);
    for (size_t i = 0; i < data_len; i++) fputc(0x3f, f);
    fclose(f);
}

static void write_st(const char *path, const char *header, size_t data_len)
{
    write_raw(path, strlen(header), header, strlen(header), data_len);
}

/* Opens path expecting status want and each substring (NULL-terminated). */
static void expect_open(const char *path, enum vs_status want, ...)
{
    struct vs_st *st = NULL;
    struct vs_err e = {0};
    enum vs_status s = vs_st_open_file(path, &st, &e);
    if (s != want) print_error("%s: status %d, want %d: %s\n", path, s, want, e.msg);
    assert_int_equal(s, want);
    assert_null(st);
    assert_non_null(strstr(e.msg, path));
    va_list ap;
    va_start(ap, want);
    vst_msg_has_all(e.msg, ap);
    va_end(ap);
}

static void test_valid_file(void **state)
{
    (void)state;
    char p[1200];
    tmp_path(p, sizeof p, "st_ok.safetensors");
    write_st(p, "{\"__metadata__\":{\"format\":\"pt\"},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[16,24]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"z\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]},"
                "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[32,32]}}", 32);
    struct vs_st *st;
    struct vs_err e = {0};
    assert_int_equal(vs_st_open_file(p, &st, &e), VS_OK);
    assert_int_equal(vs_st_count(st), 4);
    const struct vs_st_tensor *a = vs_st_find(st, "a"), *b = vs_st_find(st, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(vs_st_find(st, "c"));
    assert_int_equal(a->dtype, VS_ST_F32);
    assert_int_equal(a->numel, 4);
    assert_int_equal(b->ndim, 2);
    assert_int_equal(b->shape[1], 2);
    assert_int_equal(b->nbytes, 8);
    assert_int_equal(vs_st_find(st, "z")->numel, 1);   /* a scalar */
    assert_int_equal(vs_st_find(st, "e")->numel, 0);
    assert_int_equal(b->data - a->data, 16);
    assert_int_equal(vs_st_data_bytes(st), 32);
    assert_string_equal(vs_st_metadata(st, "format"), "pt");
    assert_int_equal(vs_st_num_files(st), 1);
    assert_string_equal(vs_st_file(st, 0), p);
    vs_st_close(st);
}

static void test_header_faults(void **state)
{
    (void)state;
    char p[1200];
    tmp_path(p, sizeof p, "st_bad.safetensors");

    write_raw(p, 0, NULL, 0, 0);                          /* the file is just 8 bytes */
    expect_open(p, VS_BAD_INPUT, "too short for a JSON object", NULL);
    FILE *f = fopen(p, "wb");                             /* empty file */
    fclose(f);
    expect_open(p, VS_BAD_INPUT, "0 bytes", NULL);
    write_raw(p, 5, "{}", 2, 0);                          /* 5 bytes promised, 2 present */
    expect_open(p, VS_BAD_INPUT, "header length 5 runs past the end", NULL);
    write_raw(p, (uint64_t)1 << 40, "{}", 2, 0);          /* 1 TB header */
    expect_open(p, VS_BAD_INPUT, "header length 1099511627776 exceeds", NULL);
    write_raw(p, UINT64_MAX, "{}", 2, 0);
    expect_open(p, VS_BAD_INPUT, "exceeds", NULL);
    write_st(p, "{not json", 0);
    expect_open(p, VS_BAD_INPUT, "not valid JSON", "line 1", NULL);
    write_st(p, "[1, 2, 3]", 0);
    expect_open(p, VS_BAD_INPUT, "must be a JSON object", NULL);
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_open(p, VS_BAD_INPUT, "duplicate", NULL);
    write_st(p, "{\"__metadata__\":{\"n\":3}}", 0);
    expect_open(p, VS_BAD_INPUT, "__metadata__", NULL);
}

static void test_tensor_faults(void **state)
{
    (void)state;
    char p[1200];
    tmp_path(p, sizeof p, "st_bad.safetensors");
    static const struct { const char *entry, *want; } t[] = {
        {"{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,16]}", "unknown dtype 'F33'"},
        {"{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,16]}", "\"dtype\" must be a string"},
        {"{\"shape\":[4],\"data_offsets\":[0,16]}", "no \"dtype\""},
        {"{\"dtype\":\"F32\",\"data_offsets\":[0,16]}", "no \"shape\""},
        {"{\"dtype\":\"F32\",\"shape\":[4]}", "no \"data_offsets\""},
        {"{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}", "shape[0]"},
        {"{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}", "shape[0]"},
        {"{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}", "\"shape\" must be an array"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1000]}",
         "data_offsets [0, 1000] out of range: the data section has 32 bytes"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}", "span 12 bytes"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-4,12]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0.5,16]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}", "data_offsets"},
        {"{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}", "begin after end"},
        {"{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}", "overflows"},
        {"{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}", "dimensions"},
        {"[0, 16]", "entry must be an object"},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        char h[512];
        snprintf(h, sizeof h, "{\"__metadata__\":{},\"my.tensor\":%s}", t[i].entry);
        write_st(p, h, 32);
        expect_open(p, VS_BAD_INPUT, "tensor 'my.tensor'", t[i].want, NULL);
    }
    /* Two tensors sharing bytes [8, 16). */
    write_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 32);
    expect_open(p, VS_BAD_INPUT, "tensor 'y'", "overlaps tensor 'x'", NULL);
}

/* A valid file cut short: the last tensor's bytes are missing. */
static void test_truncated(void **state)
{
    (void)state;
    char p[1200];
    tmp_path(p, sizeof p, "st_trunc.safetensors");
    write_st(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"last\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 20);
    expect_open(p, VS_BAD_INPUT, "tensor 'last'", "out of range", NULL);
    /* Cut inside the header. */
    const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    write_raw(p, strlen(h), h, 20, 0);
    expect_open(p, VS_BAD_INPUT, "runs past the end", NULL);
}

static void test_conversions(void **state)
{
    (void)state;
    /* F16 bit patterns with exactly known values. */
    static const struct { uint16_t h; float f; } f16[] = {
        {0x3c00, 1.0f}, {0xc000, -2.0f}, {0x0001, 5.9604644775390625e-8f},
        {0x0400, 6.103515625e-5f}, {0x7bff, 65504.0f}, {0x3555, 0.333251953125f},
        {0x0000, 0.0f}, {0x8000, -0.0f},
    };
    for (size_t i = 0; i < sizeof f16 / sizeof *f16; i++) {
        uint8_t b[2] = {(uint8_t)f16[i].h, (uint8_t)(f16[i].h >> 8)};
        float f;
        vs_st_to_f32(VS_ST_F16, b, 1, &f);
        assert_true(f == f16[i].f);
        assert_int_equal(vs_st_f32_to_f16(f16[i].f), f16[i].h);
    }
    uint8_t inf[2] = {0x00, 0x7c};
    float f;
    vs_st_to_f32(VS_ST_F16, inf, 1, &f);
    assert_true(f > 3e38f);
    assert_int_equal(vs_st_f32_to_f16(1e6f), 0x7c00);               /* overflow -> inf */
    assert_int_equal(vs_st_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* half ulp: tie -> even */
    assert_int_equal(vs_st_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* 1.5 ulp: tie -> even (up) */
    assert_int_equal(vs_st_f32_to_f16(1.0f + 3.0f / 4096), 0x3c01); /* 0.75 ulp: nearest */
    /* Every F16 value converts to float and back unchanged (NaNs aside). */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        uint8_t b[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
        vs_st_to_f32(VS_ST_F16, b, 1, &f);
        assert_int_equal(vs_st_f32_to_f16(f), h);
    }
    /* BF16 = the high 16 bits of a float. */
    uint8_t bf[4] = {0x80, 0x3f, 0x49, 0xc0};                       /* 1.0, -3.140625 */
    float two[2];
    vs_st_to_f32(VS_ST_BF16, bf, 2, two);
    assert_true(two[0] == 1.0f);
    assert_true(two[1] == -3.140625f);
    assert_int_equal(vs_st_f32_to_bf16(-3.14159265f), 0xc049);
    assert_int_equal(vs_st_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  /* tie -> even */
}

/* ---- faults found at the model level (vs_model_load) ------------------- */

static char base_dir[1200];

/* Generates a tiny valid checkpoint once. */
static int setup_base(void **state)
{
    (void)state;
    const char *tools = getenv("VS_TOOLS");
    if (!tools) return -1;
    snprintf(base_dir, sizeof base_dir, "%s/st_base", tmpdir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/vs-gen_vit' --out '%s' --preset tiny --seed 7", tools, base_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *d;
    size_t n;
    assert_int_equal(vs_read_file(from, 0, &d, &n, NULL), VS_OK);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, n, f), n);
    fclose(f);
    free(d);
}

/* Makes folder `name` = the base checkpoint with its header passed
 * through edit(); returns its path in out. */
static void make_variant(const char *name, void (*edit)(json_t *h), char *out, size_t out_n)
{
    snprintf(out, out_n, "%s/%s", tmpdir, name);
    mkdir(out, 0777);
    char from[2048], to[2048];
    static const char *const jsons[] = {"config.json", "preprocessor_config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%s", base_dir, jsons[i]);
        snprintf(to, sizeof to, "%s/%s", out, jsons[i]);
        copy_file(from, to);
    }
    snprintf(from, sizeof from, "%s/model.safetensors", base_dir);
    uint8_t *d;
    size_t n;
    assert_int_equal(vs_read_file(from, 0, &d, &n, NULL), VS_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | d[i];
    json_t *h = json_loadb((const char *)d + 8, (size_t)hl, 0, NULL);
    assert_non_null(h);
    edit(h);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    size_t tl = strlen(text);
    snprintf(to, sizeof to, "%s/model.safetensors", out);
    write_raw(to, tl, text, tl, 0);
    FILE *f = fopen(to, "ab");
    assert_int_equal(fwrite(d + 8 + hl, 1, n - 8 - hl, f), n - 8 - hl);
    fclose(f);
    free(text);
    free(d);
}

static void load_expect(const char *dir, enum vs_status want, const char *sub1, const char *sub2)
{
    struct vs_model_opts o;
    vs_model_opts_default(&o);
    o.load_weights = false;             /* validation happens without weights too */
    struct vs_model *m = NULL;
    struct vs_err e = {0};
    enum vs_status s = vs_model_load(dir, &o, &m, &e);
    if (s != want || !strstr(e.msg, sub1) || !strstr(e.msg, sub2))
        print_error("%s: status %d (want %d): %s\n", dir, s, want, e.msg);
    assert_int_equal(s, want);
    assert_null(m);
    assert_non_null(strstr(e.msg, sub1));
    assert_non_null(strstr(e.msg, sub2));
}

static void drop_classifier_bias(json_t *h) { json_object_del(h, "classifier.bias"); }

static void transpose_classifier(json_t *h)
{
    json_object_set_new(json_object_get(h, "classifier.weight"), "shape", json_pack("[i,i]", 48, 10));
}

static void int_layernorm(json_t *h)
{
    json_object_set_new(json_object_get(h, "vit.layernorm.bias"), "dtype", json_string("I32"));
}

static void test_model_level(void **state)
{
    (void)state;
    char dir[1400];
    make_variant("st_missing", drop_classifier_bias, dir, sizeof dir);
    load_expect(dir, VS_BAD_INPUT, "tensor 'classifier.bias': missing", "model.safetensors");
    make_variant("st_shape", transpose_classifier, dir, sizeof dir);
    load_expect(dir, VS_BAD_INPUT, "tensor 'classifier.weight': shape [48, 10]", "[10, 48]");
    make_variant("st_dtype", int_layernorm, dir, sizeof dir);
    load_expect(dir, VS_UNSUPPORTED, "tensor 'vit.layernorm.bias': dtype I32", "model.safetensors");
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_index_faults(void **state)
{
    (void)state;
    char dir[1400], p[2048], q[2048];
    snprintf(dir, sizeof dir, "%s/st_index", tmpdir);
    mkdir(dir, 0777);
    static const char *const jsons[] = {"config.json", "preprocessor_config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", base_dir, jsons[i]);
        snprintf(q, sizeof q, "%s/%s", dir, jsons[i]);
        copy_file(p, q);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\":{},\"weight_map\":{\"classifier.bias\":\"model-00009-of-00009.safetensors\"}}");
    load_expect(dir, VS_NOT_FOUND, "model-00009-of-00009.safetensors", "classifier.bias");
    write_text(p, "{\"weight_map\":{\"classifier.bias\":\"../st_base/model.safetensors\"}}");
    load_expect(dir, VS_BAD_INPUT, "'../st_base/model.safetensors' is not a plain file name",
                "model.safetensors.index.json");
    write_text(p, "{\"weight_map\":{\"classifier.bias\":\"/etc/passwd\"}}");
    load_expect(dir, VS_BAD_INPUT, "not a plain file name", "classifier.bias");
    write_text(p, "{\"weight_map\":[1]}");
    load_expect(dir, VS_BAD_INPUT, "weight_map", "model.safetensors.index.json");
    write_text(p, "{\"weight_map\":{\"a\": 3}}");
    load_expect(dir, VS_BAD_INPUT, "weight_map['a']", "integer");
    write_text(p, "{\"weight_map\":");
    load_expect(dir, VS_BAD_INPUT, "model.safetensors.index.json", "line 1");
    /* The index places a tensor in a shard that does not hold it. */
    snprintf(q, sizeof q, "%s/model.safetensors", base_dir);
    char shard[2048];
    snprintf(shard, sizeof shard, "%s/only.safetensors", dir);
    copy_file(q, shard);
    write_text(p, "{\"weight_map\":{\"vit.nonexistent\":\"only.safetensors\"}}");
    load_expect(dir, VS_BAD_INPUT, "tensor 'vit.nonexistent'", "only.safetensors");
    /* No weights at all. */
    remove(p);
    remove(shard);
    load_expect(dir, VS_NOT_FOUND, "no model.safetensors", dir);
}

/* Random damage to a valid file (bytes of the length prefix and header
 * overwritten, or the file cut at a random length) never crashes or leaks:
 * the reader either accepts it or names the file in its error. */
static void test_random_damage(void **state)
{
    (void)state;
    char src[1400], p[1200];
    snprintf(src, sizeof src, "%s/model.safetensors", base_dir);
    tmp_path(p, sizeof p, "st_damaged.safetensors");
    uint8_t *d;
    size_t n;
    assert_int_equal(vs_read_file(src, 0, &d, &n, NULL), VS_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | d[i];
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    uint64_t r = 42;
    int refused = 0;
    static const char junk[] = "{}[]\",:0123456789-.eE \"\\";
    for (int it = 0; it < 300; it++) {
        memcpy(copy, d, n);
        size_t len = n;
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        if (it % 4 == 3) {
            len = (size_t)((r >> 33) % (8 + hl + 64));        /* cut short */
        } else {
            for (int k = 0; k < 1 + it % 3; k++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                size_t at = (size_t)((r >> 33) % (8 + hl));
                copy[at] = at < 8 ? (uint8_t)(r >> 13) : (uint8_t)junk[(r >> 20) % (sizeof junk - 1)];
            }
        }
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        if (len) assert_int_equal(fwrite(copy, 1, len, f), len);
        fclose(f);
        struct vs_st *st = NULL;
        struct vs_err e = {0};
        if (vs_st_open_file(p, &st, &e) == VS_OK) {
            assert_non_null(st);
            vs_st_close(st);
        } else {
            assert_null(st);
            assert_non_null(strstr(e.msg, p));
            refused++;
        }
    }
    print_message("random damage: %d of 300 variants refused, none crashed\n", refused);
    assert_true(refused > 100);
    free(copy);
    free(d);
}

int main(void)
{
    const char *t = getenv("VS_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_header_faults),
        cmocka_unit_test(test_tensor_faults),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test_setup(test_model_level, setup_base),
        cmocka_unit_test_setup(test_index_faults, setup_base),
        cmocka_unit_test_setup(test_random_damage, setup_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
