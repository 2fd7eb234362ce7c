/* config.c: config.json -> struct vs_ckpt_config and
 * preprocessor_config.json -> struct vs_preproc, with jansson.
 *
 * Semantics follow transformers (ViTConfig, PretrainedConfig and
 * ViTImageProcessor as of 4.33): a missing key takes the class default, a
 * key of the wrong JSON type is VS_BAD_INPUT naming the key and the type
 * found, a value vitserve cannot compute (another architecture, an unknown
 * activation, a centre crop) is VS_UNSUPPORTED naming the value.  A config
 * without "architectures" or "model_type" is refused: vitserve cannot tell
 * what it is.  Every message starts with the file name.  Out-params are
 * written only on success.  Runs on the loading thread; no state.
 */
#include "model_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static enum vs_status bad_type(struct vs_err *err, const char *file, const char *key,
                               const char *want, const json_t *v)
{
    return vs_err_set(err, VS_BAD_INPUT, "%s: key '%s' must be %s, found %s",
                      file, key, want, type_name(v));
}

/* Integer key in [lo, hi]; *out keeps its default when the key is absent. */
static enum vs_status get_int(const json_t *o, const char *key, long lo, long hi,
                              const char *file, int *out, struct vs_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return VS_OK;
    if (!json_is_integer(v)) return bad_type(err, file, key, "an integer", v);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return vs_err_set(err, VS_BAD_INPUT, "%s: key '%s' = %lld is out of range [%ld, %ld]",
                          file, key, (long long)x, lo, hi);
    *out = (int)x;
    return VS_OK;
}

static enum vs_status get_bool(const json_t *o, const char *key, const char *file,
                               bool *out, struct vs_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return VS_OK;
    if (!json_is_boolean(v)) return bad_type(err, file, key, "true or false", v);
    *out = json_is_true(v);
    return VS_OK;
}

static enum vs_status get_num(const json_t *o, const char *key, const char *file,
                              double *out, struct vs_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return VS_OK;
    if (!json_is_number(v)) return bad_type(err, file, key, "a number", v);
    *out = json_number_value(v);
    return VS_OK;
}

/* An int or a [h, w] pair (image_size, patch_size, size). */
static enum vs_status get_pair(const json_t *o, const char *key, long lo, long hi,
                               const char *file, int *h, int *w, struct vs_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return VS_OK;
    json_int_t a, b;
    if (json_is_integer(v)) {
        a = b = json_integer_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 2 &&
               json_is_integer(json_array_get(v, 0)) && json_is_integer(json_array_get(v, 1))) {
        a = json_integer_value(json_array_get(v, 0));
        b = json_integer_value(json_array_get(v, 1));
    } else {
        return bad_type(err, file, key, "an integer or [height, width]", v);
    }
    if (a < lo || a > hi || b < lo || b > hi)
        return vs_err_set(err, VS_BAD_INPUT, "%s: key '%s' = %lldx%lld is out of range [%ld, %ld]",
                          file, key, (long long)a, (long long)b, lo, hi);
    *h = (int)a;
    *w = (int)b;
    return VS_OK;
}

static char *dup_or_null(const char *s)
{
    return strdup(s ? s : "");
}

void vs_ckpt_config_free(struct vs_ckpt_config *c)
{
    if (!c) return;
    free(c->architecture);
    free(c->model_type);
    free(c->problem_type);
    free(c->hidden_act);
    if (c->labels)
        for (int i = 0; i < c->num_labels; i++) free(c->labels[i]);
    free(c->labels);
    memset(c, 0, sizeof *c);
}

/* hidden_act -> the backend's activation (transformers' ACT2FN names). */
static bool act_lookup(const char *s, enum vs_act *out)
{
    static const struct { const char *name; enum vs_act act; } acts[] = {
        {"gelu", VS_ACT_GELU},                  /* 0.5 x (1 + erf(x / sqrt 2)) */
        {"gelu_python", VS_ACT_GELU},           /* the same formula in Python */
        {"gelu_new", VS_ACT_GELU_TANH},         /* 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) */
        {"gelu_pytorch_tanh", VS_ACT_GELU_TANH},
        {"gelu_fast", VS_ACT_GELU_FAST},        /* tanh form with 0.7978845608 folded */
        {"relu", VS_ACT_RELU},
        {"quick_gelu", VS_ACT_QUICK_GELU},      /* x sigmoid(1.702 x) */
        {"silu", VS_ACT_SILU},                  /* x sigmoid(x) */
        {"swish", VS_ACT_SILU},
    };
    for (size_t i = 0; i < VS_ARRAY_LEN(acts); i++)
        if (strcmp(s, acts[i].name) == 0) {
            *out = acts[i].act;
            return true;
        }
    return false;
}

/* id2label {"0": "...", ...}: keys must be exactly 0..n-1. */
static enum vs_status parse_labels(const json_t *map, const char *file, int *n_out,
                                   char ***out, struct vs_err *err)
{
    size_t n = json_object_size(map);
    if (n == 0) return vs_err_set(err, VS_BAD_INPUT, "%s: 'id2label' is empty", file);
    if (n > 1000000)
        return vs_err_set(err, VS_BAD_INPUT, "%s: 'id2label' has %zu labels (limit 1000000)", file, n);
    char **labels = calloc(n, sizeof *labels);
    if (!labels) return vs_err_set(err, VS_NOMEM, "out of memory for %zu labels", n);
    enum vs_status s = VS_OK;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)map, key, v) {
        char *end;
        errno = 0;
        long id = strtol(key, &end, 10);
        if (key[0] < '0' || key[0] > '9' || *end || errno || id < 0 || (size_t)id >= n) {
            s = vs_err_set(err, VS_BAD_INPUT,
                           "%s: id2label key '%.40s' is not an index in [0, %zu) "
                           "(keys must be 0..num_labels-1)", file, key, n);
            break;
        }
        if (!json_is_string(v)) {
            s = vs_err_set(err, VS_BAD_INPUT, "%s: id2label['%s'] must be a string, found %s",
                           file, key, type_name(v));
            break;
        }
        if (labels[id]) {
            s = vs_err_set(err, VS_BAD_INPUT, "%s: id2label has index %ld twice", file, id);
            break;
        }
        labels[id] = strdup(json_string_value(v));
        if (!labels[id]) {
            s = vs_err_set(err, VS_NOMEM, "out of memory");
            break;
        }
    }
    if (s) {
        for (size_t i = 0; i < n; i++) free(labels[i]);
        free(labels);
        return s;
    }
    *n_out = (int)n;
    *out = labels;
    return VS_OK;
}

static enum vs_status parse_config(const json_t *root, const char *file,
                                   struct vs_ckpt_config *c, struct vs_err *err)
{
    if (!json_is_object(root))
        return vs_err_set(err, VS_BAD_INPUT, "%s: must be a JSON object, found %s", file,
                          type_name(root));
    enum vs_status s;

    /* What the checkpoint is: architectures must name our class. */
    json_t *arch = json_object_get(root, "architectures");
    if (!arch || json_is_null(arch))
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: no 'architectures' key: cannot tell which model class this is "
                          "(vitserve runs ViTForImageClassification)", file);
    if (!json_is_array(arch)) return bad_type(err, file, "architectures", "an array of strings", arch);
    if (json_array_size(arch) == 0)
        return vs_err_set(err, VS_UNSUPPORTED, "%s: 'architectures' is empty "
                          "(vitserve runs ViTForImageClassification)", file);
    const char *found = NULL;
    for (size_t i = 0; i < json_array_size(arch); i++) {
        json_t *a = json_array_get(arch, i);
        if (!json_is_string(a)) return bad_type(err, file, "architectures[]", "a string", a);
        if (strcmp(json_string_value(a), "ViTForImageClassification") == 0) found = json_string_value(a);
    }
    if (!found)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: architecture '%.100s' is not supported (vitserve runs ViTForImageClassification)",
                          file, json_string_value(json_array_get(arch, 0)));

    json_t *mt = json_object_get(root, "model_type");
    if (!mt || json_is_null(mt))
        return vs_err_set(err, VS_UNSUPPORTED, "%s: no 'model_type' key (expected \"vit\")", file);
    if (!json_is_string(mt)) return bad_type(err, file, "model_type", "a string", mt);
    const char *mts = json_string_value(mt);
    if (strcmp(mts, "vit") != 0 && strcmp(mts, "deit") != 0)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: model_type '%.100s' is not supported (expected \"vit\", or \"deit\" "
                          "for plain DeiT checkpoints)", file, mts);

    /* ViTConfig's defaults (ViT-B/16), then the keys present. */
    c->hidden = 768; c->layers = 12; c->heads = 12; c->mlp = 3072;
    c->image_h = c->image_w = 224;
    c->patch = 16; c->channels = 3;
    c->ln_eps = 1e-12;
    c->qkv_bias = true;
    int patch_w = 16;
    if ((s = get_int(root, "hidden_size", 1, 65536, file, &c->hidden, err)) ||
        (s = get_int(root, "num_hidden_layers", 1, 1024, file, &c->layers, err)) ||
        (s = get_int(root, "num_attention_heads", 1, 65536, file, &c->heads, err)) ||
        (s = get_int(root, "intermediate_size", 1, 1 << 20, file, &c->mlp, err)) ||
        (s = get_int(root, "num_channels", 1, 1024, file, &c->channels, err)) ||
        (s = get_pair(root, "image_size", 1, 16384, file, &c->image_h, &c->image_w, err)) ||
        (s = get_pair(root, "patch_size", 1, 16384, file, &c->patch, &patch_w, err)) ||
        (s = get_num(root, "layer_norm_eps", file, &c->ln_eps, err)) ||
        (s = get_bool(root, "qkv_bias", file, &c->qkv_bias, err)))
        return s;

    if (c->hidden % c->heads != 0)
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: num_attention_heads %d does not divide hidden_size %d",
                          file, c->heads, c->hidden);
    if (c->channels != 3)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: num_channels %d is not supported (only 3-channel RGB models)",
                          file, c->channels);
    if (c->patch != patch_w)
        return vs_err_set(err, VS_UNSUPPORTED, "%s: non-square patch_size %dx%d is not supported",
                          file, c->patch, patch_w);
    if (c->image_h % c->patch || c->image_w % c->patch)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: image_size %dx%d is not a multiple of patch_size %d", file,
                          c->image_h, c->image_w, c->patch);
    long tokens = (long)(c->image_h / c->patch) * (c->image_w / c->patch) + 1;
    if (tokens > 65536)
        return vs_err_set(err, VS_UNSUPPORTED, "%s: %ld tokens (image_size / patch_size) exceeds 65536",
                          file, tokens);
    if (!(c->ln_eps >= 0) || !isfinite(c->ln_eps))
        return vs_err_set(err, VS_BAD_INPUT, "%s: layer_norm_eps %g must be a finite number >= 0",
                          file, c->ln_eps);

    const char *act = "gelu";
    json_t *ha = json_object_get(root, "hidden_act");
    if (ha) {
        if (!json_is_string(ha)) return bad_type(err, file, "hidden_act", "a string", ha);
        act = json_string_value(ha);
    }
    if (!act_lookup(act, &c->act))
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: hidden_act '%.60s' is not supported (gelu, gelu_new, gelu_pytorch_tanh, "
                          "gelu_fast, gelu_python, relu, quick_gelu, silu, swish)", file, act);

    const char *pt = "";
    json_t *ptv = json_object_get(root, "problem_type");
    if (ptv && !json_is_null(ptv)) {
        if (!json_is_string(ptv)) return bad_type(err, file, "problem_type", "a string or null", ptv);
        pt = json_string_value(ptv);
        if (strcmp(pt, "regression") && strcmp(pt, "single_label_classification") &&
            strcmp(pt, "multi_label_classification"))
            return vs_err_set(err, VS_BAD_INPUT,
                              "%s: problem_type '%.60s' is not one of regression, "
                              "single_label_classification, multi_label_classification", file, pt);
    }

    /* Labels: id2label wins over num_labels (PretrainedConfig); neither
     * means 2 labels; a missing name is "LABEL_i". */
    json_t *idl = json_object_get(root, "id2label");
    int n = 2;
    if ((s = get_int(root, "num_labels", 1, 1000000, file, &n, err))) return s;
    char **labels = NULL;
    if (idl && !json_is_null(idl)) {
        if (!json_is_object(idl)) return bad_type(err, file, "id2label", "an object", idl);
        if ((s = parse_labels(idl, file, &n, &labels, err))) return s;
    } else {
        labels = calloc((size_t)n, sizeof *labels);
        if (!labels) return vs_err_set(err, VS_NOMEM, "out of memory for %d labels", n);
        for (int i = 0; i < n; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "LABEL_%d", i);
            if (!(labels[i] = strdup(buf))) {
                for (int j = 0; j < i; j++) free(labels[j]);
                free(labels);
                return vs_err_set(err, VS_NOMEM, "out of memory");
            }
        }
    }
    c->num_labels = n;
    c->labels = labels;
    /* transformers' image-classification pipeline: sigmoid for multi-label
     * or a single output, softmax otherwise. */
    c->score_fn = (strcmp(pt, "multi_label_classification") == 0 || n == 1)
                      ? VS_SCORE_SIGMOID : VS_SCORE_SOFTMAX;
    c->architecture = strdup(found);
    c->model_type = strdup(mts);
    c->problem_type = dup_or_null(pt);
    c->hidden_act = strdup(act);
    if (!c->architecture || !c->model_type || !c->problem_type || !c->hidden_act)
        return vs_err_set(err, VS_NOMEM, "out of memory");
    return VS_OK;
}

enum vs_status vs_ckpt_config_parse(const char *text, size_t len, const char *name,
                                    struct vs_ckpt_config *out, struct vs_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        return vs_err_set(err, VS_BAD_INPUT, "%s: invalid JSON at line %d, column %d: %s",
                          name, je.line, je.column, je.text);
    struct vs_ckpt_config c;
    memset(&c, 0, sizeof c);
    enum vs_status s = parse_config(root, name, &c, err);
    json_decref(root);
    if (s) {
        vs_ckpt_config_free(&c);
        return s;
    }
    *out = c;
    return VS_OK;
}

enum vs_status vs_ckpt_config_load(const char *path, struct vs_ckpt_config *out,
                                   struct vs_err *err)
{
    uint8_t *data;
    size_t len;
    enum vs_status s = vs_read_file(path, 16u << 20, &data, &len, err);
    if (s) return s;
    s = vs_ckpt_config_parse((const char *)data, len, path, out, err);
    free(data);
    return s;
}

/* ---- preprocessor_config.json ------------------------------------------ */

void vs_preproc_defaults(int image_h, int image_w, struct vs_preproc *out)
{
    /* ViTImageProcessor.__init__ defaults; mean/std are
     * IMAGENET_STANDARD_MEAN/STD = [0.5]*3 (not the 0.485/0.229 set). */
    *out = (struct vs_preproc){
        .do_resize = true, .height = image_h, .width = image_w,
        .resample = VS_RESAMPLE_BILINEAR,
        .do_rescale = true, .rescale_factor = 1.0 / 255.0,
        .do_normalize = true,
        .image_mean = {0.5f, 0.5f, 0.5f}, .image_std = {0.5f, 0.5f, 0.5f},
        .do_convert_rgb = true,
    };
}

/* image_mean / image_std: three numbers or one number (replicated). */
static enum vs_status get_triple(const json_t *o, const char *key, const char *file,
                                 float out[3], struct vs_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return VS_OK;
    double x[3];
    if (json_is_number(v)) {
        x[0] = x[1] = x[2] = json_number_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 3) {
        for (int i = 0; i < 3; i++) {
            json_t *e = json_array_get(v, (size_t)i);
            if (!json_is_number(e)) return bad_type(err, file, key, "three numbers", e);
            x[i] = json_number_value(e);
        }
    } else if (json_is_array(v)) {
        return vs_err_set(err, VS_BAD_INPUT, "%s: key '%s' has %zu values; the model has 3 channels",
                          file, key, json_array_size(v));
    } else {
        return bad_type(err, file, key, "a list of 3 numbers", v);
    }
    for (int i = 0; i < 3; i++) {
        if (!isfinite((float)x[i]))   /* 1e39 is finite, (float)1e39 is not */
            return vs_err_set(err, VS_BAD_INPUT, "%s: key '%s' holds a non-finite value", file, key);
        out[i] = (float)x[i];   /* transformers casts to the float32 input's dtype */
    }
    return VS_OK;
}

static enum vs_status parse_preproc(const json_t *root, const char *file, int image_h,
                                    int image_w, struct vs_preproc *p, struct vs_err *err)
{
    if (!json_is_object(root))
        return vs_err_set(err, VS_BAD_INPUT, "%s: must be a JSON object, found %s", file,
                          type_name(root));
    enum vs_status s;
    int resample = (int)p->resample;
    if ((s = get_bool(root, "do_resize", file, &p->do_resize, err)) ||
        (s = get_int(root, "resample", 0, 5, file, &resample, err)) ||
        (s = get_bool(root, "do_rescale", file, &p->do_rescale, err)) ||
        (s = get_num(root, "rescale_factor", file, &p->rescale_factor, err)) ||
        (s = get_bool(root, "do_normalize", file, &p->do_normalize, err)) ||
        (s = get_triple(root, "image_mean", file, p->image_mean, err)) ||
        (s = get_triple(root, "image_std", file, p->image_std, err)) ||
        (s = get_bool(root, "do_convert_rgb", file, &p->do_convert_rgb, err)))
        return s;
    p->resample = (enum vs_resample)resample;
    if (!isfinite(p->rescale_factor))
        return vs_err_set(err, VS_BAD_INPUT, "%s: rescale_factor is not finite", file);
    for (int i = 0; i < 3; i++)
        if (p->do_normalize && p->image_std[i] == 0.0f)
            return vs_err_set(err, VS_BAD_INPUT, "%s: image_std[%d] is 0", file, i);

    bool crop = false;
    if ((s = get_bool(root, "do_center_crop", file, &crop, err))) return s;
    if (crop)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: do_center_crop is true: centre cropping is not part of "
                          "ViTImageProcessor and is not supported", file);

    /* size: {"height", "width"}, a bare int (ViTFeatureExtractor) or a
     * [h, w] pair; {"shortest_edge"} belongs to other processors. */
    json_t *sz = json_object_get(root, "size");
    int h = p->height, w = p->width;
    if (sz && json_is_object(sz)) {
        if (json_object_get(sz, "shortest_edge") || json_object_get(sz, "longest_edge"))
            return vs_err_set(err, VS_UNSUPPORTED,
                              "%s: size {\"shortest_edge\"/\"longest_edge\"} is an aspect-preserving "
                              "resize that ViTImageProcessor does not do; expected {\"height\", \"width\"}",
                              file);
        json_t *hv = json_object_get(sz, "height"), *wv = json_object_get(sz, "width");
        if (!hv || !wv)
            return vs_err_set(err, VS_BAD_INPUT, "%s: size must have \"height\" and \"width\"", file);
        if ((s = get_int(sz, "height", 1, 65536, file, &h, err)) ||
            (s = get_int(sz, "width", 1, 65536, file, &w, err)))
            return s;
    } else if (sz && !json_is_null(sz)) {
        if ((s = get_pair(root, "size", 1, 65536, file, &h, &w, err))) return s;
    }
    if (p->do_resize && (h != image_h || w != image_w))
        return vs_err_set(err, VS_UNSUPPORTED,
                          "%s: resize target %dx%d differs from the model's image_size %dx%d",
                          file, h, w, image_h, image_w);
    p->height = image_h;
    p->width = image_w;
    return VS_OK;
}

enum vs_status vs_preproc_parse(const char *text, size_t len, const char *name,
                                int image_h, int image_w, struct vs_preproc *out,
                                struct vs_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        return vs_err_set(err, VS_BAD_INPUT, "%s: invalid JSON at line %d, column %d: %s",
                          name, je.line, je.column, je.text);
    struct vs_preproc p;
    vs_preproc_defaults(image_h, image_w, &p);
    enum vs_status s = parse_preproc(root, name, image_h, image_w, &p, err);
    json_decref(root);
    if (s) return s;
    *out = p;
    return VS_OK;
}
