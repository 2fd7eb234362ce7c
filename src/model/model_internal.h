/* model_internal.h: what the loader's files (config.c, hub.c, model.c)
 * share.  Private to src/model/.
 *
 * config.c turns config.json into struct vs_ckpt_config and
 * preprocessor_config.json into struct vs_preproc; hub.c maps a --model
 * argument to a snapshot folder; model.c ties them to the safetensors
 * reader and the backend.  All of it runs on the loading thread.
 */
#ifndef VS_MODEL_INTERNAL_H
#define VS_MODEL_INTERNAL_H

#include "model.h"
#include "backend.h"

/* config.json, validated.  Strings and labels are owned (vs_ckpt_config_free). */
struct vs_ckpt_config {
    char *architecture;         /* "ViTForImageClassification" */
    char *model_type;           /* "vit" or "deit" */
    char *problem_type;         /* "" when absent/null */
    char *hidden_act;           /* as written, e.g. "gelu_new" */
    enum vs_act act;
    int hidden, layers, heads, mlp;
    int image_h, image_w, patch, channels;
    double ln_eps;
    bool qkv_bias;
    int num_labels;
    char **labels;              /* [num_labels], UTF-8, NUL-terminated */
    enum vs_score_fn score_fn;  /* the pipeline's default function_to_apply */
};

/* Parses config.json text; name is used in messages (usually the path).
 * On failure nothing is allocated. */
enum vs_status vs_ckpt_config_parse(const char *text, size_t len, const char *name,
                                    struct vs_ckpt_config *out, struct vs_err *err);
/* Reads and parses a config.json file. */
enum vs_status vs_ckpt_config_load(const char *path, struct vs_ckpt_config *out,
                                   struct vs_err *err);
void vs_ckpt_config_free(struct vs_ckpt_config *c);

/* Parses preprocessor_config.json text against the model's image size
 * (image_h x image_w): missing keys take ViTImageProcessor's defaults. */
enum vs_status vs_preproc_parse(const char *text, size_t len, const char *name,
                                int image_h, int image_w, struct vs_preproc *out,
                                struct vs_err *err);
/* transformers' ViTImageProcessor defaults with size = image_h x image_w. */
void vs_preproc_defaults(int image_h, int image_w, struct vs_preproc *out);

/* hub.c: is spec a syntactically valid hub id "org/name[@rev]" or "name[@rev]"? */
bool vs_hub_id_valid(const char *spec);

#endif
