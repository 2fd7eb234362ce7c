/* model.h: the door of the model module — a Hugging Face
 * ViTForImageClassification checkpoint, loaded and ready to run.
 *
 * A model is loaded from a folder in Hugging Face snapshot layout
 * (config.json, preprocessor_config.json, model.safetensors or a sharded
 * model.safetensors.index.json) or from a hub id ("org/name[@revision]")
 * resolved in the local Hugging Face cache.  Loading validates everything
 * (config keys, tensor names, shapes, dtypes, offsets) and fails with a
 * message naming the file, tensor or key; it never crashes on bad files.
 *
 * The engine takes preprocessed pixels float[n][C][H][W] and returns logits
 * float[n][num_labels].  It owns only weights and scratch memory; the queue
 * belongs to the caller (serve/'s batcher).
 *
 * Threads: vs_model_load/destroy from one thread.  vs_model_info() may be
 * read from any thread once loaded (it never changes).  vs_model_forward()
 * and vs_model_forward_rows() must not be called concurrently on the same
 * model: one batch at a time (the batcher thread); they use all the threads
 * given in the options.
 */
#ifndef VS_MODEL_MODEL_H
#define VS_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "../common/vs.h"
#include "../common/preproc.h"

struct vs_model;

enum vs_device { VS_DEVICE_AUTO, VS_DEVICE_CPU, VS_DEVICE_CUDA };

enum vs_precision {
    VS_PRECISION_FP32,   /* exact path, the default */
    VS_PRECISION_INT8,   /* CPU: dynamic int8 (VNNI) */
    VS_PRECISION_FP16,   /* CUDA tensor cores */
    VS_PRECISION_BF16,   /* CUDA tensor cores */
};

/* Parses "fp32" / "int8" / "fp16" / "bf16"; false if unknown. */
bool vs_precision_parse(const char *s, enum vs_precision *out);
const char *vs_precision_name(enum vs_precision p);
/* Parses "auto" / "cpu" / "cuda" / "cuda:N"; false if malformed. */
bool vs_device_parse(const char *s, enum vs_device *dev, int *index);

/* What the classifier head's scores mean, as transformers' pipeline
 * decides its default function_to_apply. */
enum vs_score_fn { VS_SCORE_SOFTMAX, VS_SCORE_SIGMOID, VS_SCORE_NONE };
bool vs_score_fn_parse(const char *s, enum vs_score_fn *out);

struct vs_model_opts {
    enum vs_device device;       /* default AUTO: CUDA if built and present */
    int device_index;            /* CUDA device ordinal, default 0 */
    enum vs_precision precision; /* default FP32 */
    int threads;                 /* CPU compute threads; 0 = all cores */
    int max_batch;               /* largest n passed to forward; default 32 */
    bool load_weights;           /* false: config + preprocessor only (cheap) */
    bool prepack;                /* CPU: build GEMM-ready copies of the weights in a
                                  * background thread after load (~6% faster forwards
                                  * once done; for long-running processes; default
                                  * false) — see vs_model_settle */
};

/* Fills *o with the defaults above. */
void vs_model_opts_default(struct vs_model_opts *o);

/* Everything a caller may want to know about a loaded model.  Strings and
 * arrays are owned by the model and live as long as it does. */
/* The warning, one wording for the CLI and the server log, when a model
 * folder has no preprocessor_config.json (vs_model_info.preproc_defaults). */
#define VS_MODEL_PREPROC_DEFAULTS_WARNING                                              \
    "no preprocessor_config.json: using ViTImageProcessor's defaults (mean and std " \
    "0.5); a model trained with other normalisation scores wrongly"

struct vs_model_info {
    const char *spec;           /* what the user passed to --model */
    const char *dir;            /* resolved snapshot folder */
    const char *name;           /* short name for logs/metrics: hub id or folder basename */
    const char *architecture;   /* "ViTForImageClassification" */
    const char *model_type;     /* "vit" */
    const char *problem_type;   /* "single_label_classification", ... or "" */
    const char *hidden_act;     /* "gelu", "gelu_new", ... */
    int image_height, image_width, patch_size, num_channels;
    int hidden_size, num_layers, num_heads, intermediate_size;
    int num_tokens;             /* patches + 1 (CLS) */
    double layer_norm_eps;
    bool qkv_bias;
    int num_labels;
    const char *const *labels;  /* id2label in index order; "LABEL_i" when absent */
    const char *dtype;          /* stored dtype: "F32", "F16", "BF16" (or "mixed") */
    uint64_t num_params;
    uint64_t weight_bytes;      /* bytes of tensor data in the safetensors files */
    int num_files;
    const char *const *files;   /* the files read, full paths */
    enum vs_score_fn default_score_fn; /* softmax, or sigmoid for multi-label / 1-label */
    struct vs_preproc preproc;  /* from preprocessor_config.json */
    bool preproc_defaults;      /* the folder has none: ViTImageProcessor's defaults
                                 * (a cache filled by AutoModel alone lacks it);
                                 * warn with VS_MODEL_PREPROC_DEFAULTS_WARNING */
    const char *backend;        /* "cpu-onednn", "cuda", ... ("" when !load_weights) */
    const char *device_name;    /* CPU model or GPU name */
    enum vs_precision precision;
    int threads;
    double flops_per_image;     /* forward-pass FLOPs (2 per multiply-add) */
};

/* Resolves a --model argument to a snapshot folder without loading it:
 * an existing folder is used as is; "org/name[@rev]" is looked up in
 * $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
 * On VS_NOT_FOUND the message lists every place that was looked at. */
enum vs_status vs_model_resolve(const char *spec, char *dir, size_t dir_size,
                                struct vs_err *err);

/* Loads and validates a checkpoint; on success *out owns everything and
 * must be freed with vs_model_destroy().  Errors name the file and the
 * key/tensor at fault (VS_BAD_INPUT, VS_UNSUPPORTED, VS_NOT_FOUND, VS_IO,
 * VS_NOMEM, VS_BACKEND). */
enum vs_status vs_model_load(const char *spec, const struct vs_model_opts *opts,
                             struct vs_model **out, struct vs_err *err);

/* NULL is a no-op. */
void vs_model_destroy(struct vs_model *m);

const struct vs_model_info *vs_model_info(const struct vs_model *m);

/* Checks that an image of img_w x img_h comes out of this model's
 * preprocessor at the model's input size (it always does when the
 * preprocessor resizes); VS_BAD_INPUT naming both sizes otherwise.  Callers
 * run it before preprocessing into a buffer sized for the model. */
enum vs_status vs_model_check_image_size(const struct vs_model_info *mi, int img_w,
                                         int img_h, struct vs_err *err);

/* Runs n images (1 <= n <= max_batch) through the network.
 * pixels: float[n][C][H][W] as produced by vs_image_preprocess().
 * logits: float[n][num_labels], written on success.
 * Batched results equal one-image results (no cross-talk between rows). */
enum vs_status vs_model_forward(struct vs_model *m, const float *pixels, int n,
                                float *logits, struct vs_err *err);

/* vs_model_forward() with each image in its own buffer: image i's pixels
 * (float[C][H][W], as vs_image_preprocess() writes them) are at rows[i];
 * logits[i] is image i's.  Same checks, the same results bit for bit, and
 * the same one-batch-at-a-time rule.  For callers whose images are
 * scattered (the batcher: one buffer per request): a backend that copies
 * its input anyway (CUDA: into pinned staging, overlapped with the GPU)
 * reads each image straight from rows[i]; the CPU backend runs image by
 * image anyway; any other backend gets the rows gathered into a buffer the
 * model allocated at load for max_batch images.  The rows may alias each
 * other (the same image twice) but not logits. */
enum vs_status vs_model_forward_rows(struct vs_model *m, const float *const *rows, int n,
                                     float *logits, struct vs_err *err);

/* The compute device's state, for /health and /metrics.  Safe to call from
 * any thread while another runs vs_model_forward(). */
struct vs_device_status {
    bool is_gpu;
    bool lost;                 /* the device failed: the model cannot serve any more */
    char why[256];             /* why it was lost */
    uint64_t mem_used_bytes;   /* GPU memory in use on the device (all processes); 0 = unknown */
    uint64_t mem_total_bytes;
    double utilization;        /* 0..1, GPU busy share from NVML; < 0 when unknown */
};
void vs_model_device_status(struct vs_model *m, struct vs_device_status *out);

/* Waits until background work that changes the speed of vs_model_forward()
 * is done (the CPU backend's prepacking); returns at once when there is
 * none.  For benchmarks: time the steady state. */
void vs_model_settle(struct vs_model *m);
/* Only whether the device was lost (and why, into why[256] when not NULL):
 * cheap enough for every request. */
bool vs_model_device_lost(struct vs_model *m, char *why);

/* Turns logits into scores (in place allowed: scores may equal logits). */
void vs_scores_apply(enum vs_score_fn fn, const float *logits, int n,
                     float *scores);

/* Indices of the k largest scores, highest first; ties keep the lower
 * index first (as torch.topk on CPU).  Returns min(k, n). */
int vs_topk(const float *scores, int n, int k, int *idx);

#endif
