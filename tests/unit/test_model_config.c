/* test_model_config.c: config.json and preprocessor_config.json parsing
 * (src/model/config.c) — transformers' defaults for missing keys, refusal
 * of other architectures, type errors naming the key, JSON syntax errors
 * with line/column, and label names with escapes decoded exactly as the
 * HF fixture's expected.json lists them.  Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vst_msg.h"

#include <jansson.h>

#include "model/model_internal.h"

#define VIT "\"architectures\": [\"ViTForImageClassification\"], \"model_type\": \"vit\""

static enum vs_status parse(const char *text, struct vs_ckpt_config *c, struct vs_err *e)
{
    memset(e, 0, sizeof *e);
    return vs_ckpt_config_parse(text, strlen(text), "m/config.json", c, e);
}

/* Parses text expecting failure `want` with every substring in the list. */
static void expect_fail(const char *text, enum vs_status want, ...)
{
    struct vs_ckpt_config c;
    struct vs_err e;
    enum vs_status s = parse(text, &c, &e);
    if (s != want) print_error("status %d, want %d; msg: %s\n", s, want, e.msg);
    assert_int_equal(s, want);
    assert_non_null(strstr(e.msg, "m/config.json"));
    va_list ap;
    va_start(ap, want);
    vst_msg_has_all(e.msg, ap);
    va_end(ap);
}

static void test_defaults(void **state)
{
    (void)state;
    struct vs_ckpt_config c;
    struct vs_err e;
    assert_int_equal(parse("{" VIT "}", &c, &e), VS_OK);
    /* ViTConfig() defaults = ViT-B/16. */
    assert_int_equal(c.hidden, 768);
    assert_int_equal(c.layers, 12);
    assert_int_equal(c.heads, 12);
    assert_int_equal(c.mlp, 3072);
    assert_int_equal(c.act, VS_ACT_GELU);
    assert_string_equal(c.hidden_act, "gelu");
    assert_true(c.ln_eps == 1e-12);
    assert_int_equal(c.image_h, 224);
    assert_int_equal(c.image_w, 224);
    assert_int_equal(c.patch, 16);
    assert_int_equal(c.channels, 3);
    assert_true(c.qkv_bias);
    /* PretrainedConfig: no id2label, no num_labels -> 2 labels LABEL_i. */
    assert_int_equal(c.num_labels, 2);
    assert_string_equal(c.labels[0], "LABEL_0");
    assert_string_equal(c.labels[1], "LABEL_1");
    assert_int_equal(c.score_fn, VS_SCORE_SOFTMAX);
    assert_string_equal(c.problem_type, "");
    vs_ckpt_config_free(&c);
}

static void test_values_read(void **state)
{
    (void)state;
    struct vs_ckpt_config c;
    struct vs_err e;
    assert_int_equal(parse("{" VIT ", \"hidden_size\": 64, \"num_hidden_layers\": 3,"
                           "\"num_attention_heads\": 4, \"intermediate_size\": 100,"
                           "\"hidden_act\": \"gelu_new\", \"layer_norm_eps\": 1e-6,"
                           "\"image_size\": [48, 64], \"patch_size\": 16, \"qkv_bias\": false,"
                           "\"num_labels\": 5, \"problem_type\": \"multi_label_classification\"}",
                           &c, &e), VS_OK);
    assert_int_equal(c.hidden, 64);
    assert_int_equal(c.layers, 3);
    assert_int_equal(c.heads, 4);
    assert_int_equal(c.mlp, 100);
    assert_int_equal(c.act, VS_ACT_GELU_TANH);
    assert_true(c.ln_eps == 1e-6);
    assert_int_equal(c.image_h, 48);
    assert_int_equal(c.image_w, 64);
    assert_false(c.qkv_bias);
    assert_int_equal(c.num_labels, 5);
    assert_string_equal(c.labels[4], "LABEL_4");
    assert_int_equal(c.score_fn, VS_SCORE_SIGMOID);
    vs_ckpt_config_free(&c);

    /* One output: the pipeline applies sigmoid. */
    assert_int_equal(parse("{" VIT ", \"id2label\": {\"0\": \"hotdog\"}}", &c, &e), VS_OK);
    assert_int_equal(c.num_labels, 1);
    assert_int_equal(c.score_fn, VS_SCORE_SIGMOID);
    vs_ckpt_config_free(&c);

    /* A DeiT checkpoint saved with the ViT class is fine. */
    assert_int_equal(parse("{\"architectures\": [\"ViTForImageClassification\"],"
                           "\"model_type\": \"deit\"}", &c, &e), VS_OK);
    assert_string_equal(c.model_type, "deit");
    vs_ckpt_config_free(&c);
}

static void test_activations(void **state)
{
    (void)state;
    static const struct { const char *name; enum vs_act act; } t[] = {
        {"gelu", VS_ACT_GELU}, {"gelu_new", VS_ACT_GELU_TANH},
        {"gelu_pytorch_tanh", VS_ACT_GELU_TANH}, {"relu", VS_ACT_RELU},
        {"quick_gelu", VS_ACT_QUICK_GELU}, {"gelu_fast", VS_ACT_GELU_FAST},
        {"silu", VS_ACT_SILU}, {"swish", VS_ACT_SILU},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        char text[256];
        snprintf(text, sizeof text, "{" VIT ", \"hidden_act\": \"%s\"}", t[i].name);
        struct vs_ckpt_config c;
        struct vs_err e;
        assert_int_equal(parse(text, &c, &e), VS_OK);
        assert_int_equal(c.act, t[i].act);
        assert_string_equal(c.hidden_act, t[i].name);
        vs_ckpt_config_free(&c);
    }
    expect_fail("{" VIT ", \"hidden_act\": \"mish\"}", VS_UNSUPPORTED, "hidden_act", "'mish'", NULL);
}

static void test_architecture_refused(void **state)
{
    (void)state;
    expect_fail("{\"architectures\": [\"BertForMaskedLM\"], \"model_type\": \"bert\"}",
                VS_UNSUPPORTED, "architecture 'BertForMaskedLM' is not supported",
                "ViTForImageClassification", NULL);
    expect_fail("{\"model_type\": \"vit\"}", VS_UNSUPPORTED, "architectures", NULL);
    expect_fail("{\"architectures\": [\"ViTForImageClassification\"]}", VS_UNSUPPORTED,
                "model_type", NULL);
    expect_fail("{\"architectures\": [\"ViTForImageClassification\"], \"model_type\": \"swin\"}",
                VS_UNSUPPORTED, "'swin'", NULL);
    expect_fail("{" VIT ", \"num_channels\": 1}", VS_UNSUPPORTED, "num_channels 1", NULL);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_fail("{" VIT ", \"hidden_size\": 48, \"num_attention_heads\": 5}", VS_BAD_INPUT,
                "num_attention_heads 5", "hidden_size 48", NULL);
    expect_fail("{" VIT ", \"hidden_size\": \"768\"}", VS_BAD_INPUT, "'hidden_size'", "string", NULL);
    expect_fail("{" VIT ", \"hidden_size\": 768.0}", VS_BAD_INPUT, "'hidden_size'", "real", NULL);
    expect_fail("{" VIT ", \"qkv_bias\": 1}", VS_BAD_INPUT, "'qkv_bias'", "integer", NULL);
    expect_fail("{" VIT ", \"layer_norm_eps\": \"1e-12\"}", VS_BAD_INPUT, "'layer_norm_eps'", NULL);
    expect_fail("{" VIT ", \"id2label\": [\"a\", \"b\"]}", VS_BAD_INPUT, "'id2label'", "array", NULL);
    expect_fail("{" VIT ", \"id2label\": {\"0\": \"a\", \"x\": \"b\"}}", VS_BAD_INPUT, "'x'", NULL);
    expect_fail("{" VIT ", \"id2label\": {\"0\": \"a\", \"2\": \"b\"}}", VS_BAD_INPUT, "'2'", NULL);
    expect_fail("{" VIT ", \"id2label\": {\"0\": 7}}", VS_BAD_INPUT, "id2label['0']", "integer", NULL);
    expect_fail("{" VIT ", \"hidden_size\": -4}", VS_BAD_INPUT, "'hidden_size' = -4", NULL);
    expect_fail("{" VIT ", \"image_size\": 30, \"patch_size\": 16}", VS_UNSUPPORTED, "30x30", NULL);
    expect_fail("{" VIT ", \"image_size\": \"big\"}", VS_BAD_INPUT, "'image_size'", NULL);
    expect_fail("{" VIT ", \"problem_type\": \"ranking\"}", VS_BAD_INPUT, "'ranking'", NULL);
    expect_fail("[1, 2]", VS_BAD_INPUT, "object", NULL);
}

static void test_syntax_error_position(void **state)
{
    (void)state;
    /* The missing ':' is on line 3. */
    expect_fail("{\n  \"architectures\": [\"ViTForImageClassification\"],\n  \"model_type\" \"vit\"\n}",
                VS_BAD_INPUT, "line 3, column", NULL);
    expect_fail("", VS_BAD_INPUT, "line 1", NULL);
}

/* The fixture's config.json holds \u escapes, a surrogate pair, a tab,
 * quotes, a backslash and an empty name; expected.json lists the decoded
 * strings as UTF-8 — both must agree byte for byte. */
static void test_fixture_labels(void **state)
{
    (void)state;
    const char *shared = getenv("VS_SHARED");
    if (!shared) skip();
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/hf-reference/model/config.json", shared);
    struct vs_ckpt_config c;
    struct vs_err e = {0};
    enum vs_status s = vs_ckpt_config_load(path, &c, &e);
    if (s) print_error("%s\n", e.msg);
    assert_int_equal(s, VS_OK);

    snprintf(path, sizeof path, "%s/fixtures/hf-reference/expected.json", shared);
    json_error_t je;
    json_t *exp = json_load_file(path, 0, &je);
    assert_non_null(exp);
    json_t *labels = json_object_get(json_object_get(exp, "model"), "id2label");
    assert_true(json_is_array(labels));
    assert_int_equal(c.num_labels, (int)json_array_size(labels));
    for (int i = 0; i < c.num_labels; i++)
        assert_string_equal(c.labels[i], json_string_value(json_array_get(labels, (size_t)i)));
    assert_int_equal(c.hidden, 48);
    assert_int_equal(c.heads, 3);
    assert_int_equal(c.image_h, 32);
    assert_int_equal(c.patch, 8);
    json_decref(exp);
    vs_ckpt_config_free(&c);
}

/* ---- preprocessor_config.json ------------------------------------------ */

static enum vs_status pparse(const char *text, int size, struct vs_preproc *p, struct vs_err *e)
{
    memset(e, 0, sizeof *e);
    return vs_preproc_parse(text, strlen(text), "m/preprocessor_config.json", size, size, p, e);
}

static void test_preproc_defaults(void **state)
{
    (void)state;
    struct vs_preproc p;
    struct vs_err e;
    assert_int_equal(pparse("{}", 224, &p, &e), VS_OK);
    assert_true(p.do_resize);
    assert_int_equal(p.height, 224);
    assert_int_equal(p.width, 224);
    assert_int_equal(p.resample, VS_RESAMPLE_BILINEAR);
    assert_true(p.do_rescale);
    assert_true(p.rescale_factor == 1.0 / 255.0);
    assert_true(p.do_normalize);
    for (int i = 0; i < 3; i++) {
        assert_true(p.image_mean[i] == 0.5f);  /* IMAGENET_STANDARD_MEAN, ViT's default */
        assert_true(p.image_std[i] == 0.5f);
    }
}

static void test_preproc_values(void **state)
{
    (void)state;
    struct vs_preproc p;
    struct vs_err e;
    /* Legacy ViTFeatureExtractor: bare int size, no do_rescale key. */
    assert_int_equal(pparse("{\"feature_extractor_type\": \"ViTFeatureExtractor\", \"do_resize\": true,"
                            "\"size\": 384, \"resample\": 3, \"do_normalize\": true,"
                            "\"image_mean\": [0.485, 0.456, 0.406], \"image_std\": 0.25}",
                            384, &p, &e), VS_OK);
    assert_int_equal(p.height, 384);
    assert_int_equal(p.width, 384);
    assert_int_equal(p.resample, VS_RESAMPLE_BICUBIC);
    assert_true(p.do_rescale);
    assert_true(p.image_mean[0] == 0.485f && p.image_mean[1] == 0.456f && p.image_mean[2] == 0.406f);
    assert_true(p.image_std[0] == 0.25f && p.image_std[2] == 0.25f);

    assert_int_equal(pparse("{\"size\": {\"height\": 32, \"width\": 32}, \"do_rescale\": false,"
                            "\"rescale_factor\": 0.5, \"do_normalize\": false, \"resample\": 0}",
                            32, &p, &e), VS_OK);
    assert_false(p.do_rescale);
    assert_false(p.do_normalize);
    assert_true(p.rescale_factor == 0.5);
    assert_int_equal(p.resample, VS_RESAMPLE_NEAREST);

    assert_int_equal(pparse("{\"size\": {\"shortest_edge\": 224}}", 224, &p, &e), VS_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "shortest_edge"));
    assert_int_equal(pparse("{\"size\": {\"height\": 384, \"width\": 384}}", 224, &p, &e), VS_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "384x384"));
    assert_non_null(strstr(e.msg, "224x224"));
    assert_int_equal(pparse("{\"resample\": 6}", 224, &p, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "'resample'"));
    assert_int_equal(pparse("{\"image_mean\": [0.5, 0.5]}", 224, &p, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "image_mean"));
    assert_int_equal(pparse("{\"do_resize\": \"yes\"}", 224, &p, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "'do_resize'"));
    assert_non_null(strstr(e.msg, "m/preprocessor_config.json"));
    assert_int_equal(pparse("{\"do_center_crop\": true, \"crop_size\": 224}", 224, &p, &e),
                     VS_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "do_center_crop"));
    assert_int_equal(pparse("{\"size\": 224,\n\"resample\": }", 224, &p, &e), VS_BAD_INPUT);
    assert_non_null(strstr(e.msg, "line 2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values_read),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_architecture_refused),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_syntax_error_position),
        cmocka_unit_test(test_fixture_labels),
        cmocka_unit_test(test_preproc_defaults),
        cmocka_unit_test(test_preproc_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
