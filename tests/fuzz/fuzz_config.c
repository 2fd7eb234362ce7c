/* fuzz_config.c: vs_ckpt_config_parse() (src/model/config.c) on arbitrary
 * bytes taken as config.json: JSON, architectures/model_type checks,
 * ViTConfig's numeric keys and their bounds, hidden_act, problem_type and
 * the id2label / num_labels label table.
 *
 * Oracle on success: the invariants the loader and the backends rely on —
 * architecture ViTForImageClassification, model_type vit/deit, all sizes
 * positive, heads divide hidden, patch divides both image sides, 3
 * channels, at most 65536 tokens, layer_norm_eps finite and >= 0,
 * num_labels >= 1 with every label a string, sigmoid exactly for
 * multi-label or single-output models.  On failure: a status and a
 * message, *out untouched.  The text is passed with its length only (no
 * terminating NUL), so ASan flags a parser that runs past it.
 * Called from one thread.
 */
#include <math.h>

#include "fuzz_util.h"
#include "model/model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vs_ckpt_config c;
    struct vs_err err = { 0 };
    memset(&c, 0xA5, sizeof c);
    enum vs_status s = vs_ckpt_config_parse((const char *)data, size, "fuzz/config.json", &c, &err);
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_ckpt_config_parse");
        VSF_CHECK(s == VS_BAD_INPUT || s == VS_UNSUPPORTED || s == VS_NOMEM,
                  "unexpected status %s: %s", vs_status_name(s), err.msg);
        VSF_CHECK(vsf_all_bytes(&c, sizeof c, 0xA5), "out written on failure");
        return 0;
    }
    VSF_CHECK(c.architecture && strcmp(c.architecture, "ViTForImageClassification") == 0,
              "architecture");
    VSF_CHECK(c.model_type && (!strcmp(c.model_type, "vit") || !strcmp(c.model_type, "deit")),
              "model_type");
    VSF_CHECK(c.problem_type && c.hidden_act, "strings");
    VSF_CHECK(c.hidden > 0 && c.layers > 0 && c.heads > 0 && c.mlp > 0 && c.patch > 0 &&
              c.image_h > 0 && c.image_w > 0, "sizes %d %d %d %d %d %dx%d", c.hidden, c.layers,
              c.heads, c.mlp, c.patch, c.image_h, c.image_w);
    VSF_CHECK(c.hidden % c.heads == 0, "heads %d do not divide hidden %d", c.heads, c.hidden);
    VSF_CHECK(c.image_h % c.patch == 0 && c.image_w % c.patch == 0, "patch %d vs %dx%d",
              c.patch, c.image_h, c.image_w);
    VSF_CHECK(c.channels == 3, "channels %d", c.channels);
    VSF_CHECK((long)(c.image_h / c.patch) * (c.image_w / c.patch) + 1 <= 65536, "tokens");
    VSF_CHECK(isfinite(c.ln_eps) && c.ln_eps >= 0, "ln_eps %g", c.ln_eps);
    VSF_CHECK((int)c.act >= VS_ACT_GELU && (int)c.act <= VS_ACT_SILU, "act %d", (int)c.act);
    VSF_CHECK(c.num_labels >= 1 && c.labels != NULL, "num_labels %d", c.num_labels);
    for (int i = 0; i < c.num_labels; i++) {
        VSF_CHECK(c.labels[i] != NULL, "label %d missing", i);
        vsf_sink(strlen(c.labels[i]));
    }
    const bool multi = strcmp(c.problem_type, "multi_label_classification") == 0;
    VSF_CHECK((c.score_fn == VS_SCORE_SIGMOID) == (multi || c.num_labels == 1),
              "score_fn %d for problem_type '%s', %d labels", (int)c.score_fn,
              c.problem_type, c.num_labels);
    vs_ckpt_config_free(&c);
    return 0;
}
