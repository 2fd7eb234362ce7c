/* backend.h: what a compute device must provide to run a ViT.  Private to
 * src/model/ (vit.c dispatches to it; nothing outside model/ includes it).
 *
 * The seam is the whole forward pass rather than single ops: a GPU backend
 * wants to own its memory arena, fuse kernels and capture CUDA graphs, and a
 * CPU backend wants to pick its GEMM library's layouts; both read the same
 * host weights (fp32, row-major, HF shapes) described below.
 *
 * Contract: create() may keep pointers into *w for the life of the context
 * (the weights outlive every backend context).  forward() and
 * forward_rows() are never called concurrently on one context.  Every slot
 * is required unless marked.
 */
#ifndef VS_MODEL_BACKEND_H
#define VS_MODEL_BACKEND_H

#include "model.h"

enum vs_act { VS_ACT_GELU, VS_ACT_GELU_TANH, VS_ACT_RELU, VS_ACT_QUICK_GELU,
              VS_ACT_GELU_FAST, VS_ACT_SILU };

/* The numbers that shape the network.  D = hidden, T = tokens, L = layers. */
struct vs_vit_config {
    int channels;      /* C, input channels (3) */
    int image_h, image_w;
    int patch;         /* P, kernel = stride of the patch embedding */
    int grid_h, grid_w;/* image / patch */
    int tokens;        /* T = grid_h * grid_w + 1 */
    int hidden;        /* D */
    int heads;         /* H; head_dim = D / H */
    int mlp;           /* intermediate size */
    int layers;        /* L */
    int labels;        /* classifier outputs */
    float ln_eps;
    enum vs_act act;
};

/* fp32 host tensors, HF shapes, row-major.  Linear weights are [out, in]
 * (y = x W^T + b).  Biases may be NULL where the checkpoint has none
 * (qkv_bias = false gives NULL q_b/k_b/v_b). */
struct vs_vit_layer {
    const float *ln1_g, *ln1_b;      /* (D) layernorm_before */
    const float *q_w, *q_b;          /* (D, D), (D) */
    const float *k_w, *k_b;
    const float *v_w, *v_b;
    const float *o_w, *o_b;          /* attention.output.dense (D, D) */
    const float *ln2_g, *ln2_b;      /* (D) layernorm_after */
    const float *fc1_w, *fc1_b;      /* intermediate.dense (M, D), (M) */
    const float *fc2_w, *fc2_b;      /* output.dense (D, M), (D) */
};

struct vs_vit_weights {
    const float *patch_w;            /* (D, C, P, P) conv weight */
    const float *patch_b;            /* (D) */
    const float *cls;                /* (D) */
    const float *pos;                /* (T, D) */
    struct vs_vit_layer *layer;      /* [L] */
    const float *lnf_g, *lnf_b;      /* (D) vit.layernorm */
    const float *head_w, *head_b;    /* (labels, D), (labels) classifier */
    /* Where the tensors live.  file_backed: every pointer above that is not
     * inside arena[0, arena_floats) points into a read-only file mapping,
     * so a backend that keeps its own copy of a weight (int8, packed) may
     * drop those pages from memory (madvise DONTNEED): a later read faults
     * them back from the file.  false (the default for weights built in
     * memory): never dropped. */
    bool file_backed;
    const float *arena;
    size_t arena_floats;
};

/* FLOPs (2 per multiply-add) of one image's forward pass (model.c). */
double vs_vit_flops(const struct vs_vit_config *c);

struct vs_backend_opts {
    enum vs_precision precision;
    int threads;        /* CPU threads (0 = all) */
    int max_batch;
    int device_index;   /* CUDA ordinal */
    bool prepack;       /* CPU: build GEMM-ready weight copies in the background
                         * (long-running processes: serve, bench) */
};

/* The CUDA backend is a separately built plugin that hands over its ops
 * table by address: bump VS_BACKEND_OPS_VERSION whenever the table or a
 * struct it passes changes, so that a plugin from another build is refused
 * (cuda_plugin.c) instead of having its slots misread. */
#define VS_BACKEND_OPS_VERSION 2u
#define VS_BACKEND_ABI                                                               \
    ((VS_BACKEND_OPS_VERSION << 24) | (((unsigned)sizeof(struct vs_backend_ops) & 0xffu) << 16) | \
     (((unsigned)sizeof(struct vs_backend_opts) & 0xffu) << 8) |                             \
     (((unsigned)sizeof(struct vs_vit_weights) + (unsigned)sizeof(struct vs_vit_layer) +     \
       (unsigned)sizeof(struct vs_vit_config)) & 0xffu))

struct vs_backend_ops {
    const char *name;   /* "cpu", "cuda" */

    /* Builds a context for these weights; may convert/quantize/upload them
     * and allocate scratch for max_batch images.  VS_UNSUPPORTED for a
     * precision the device cannot run, VS_NOMEM/VS_BACKEND with a message
     * naming the bytes needed and available. */
    enum vs_status (*create)(const struct vs_vit_config *cfg,
                             const struct vs_vit_weights *w,
                             const struct vs_backend_opts *opts,
                             void **ctx, struct vs_err *err);

    /* pixels: host float[n][C][H][W]; logits: host float[n][labels]. */
    enum vs_status (*forward)(void *ctx, const float *pixels, int n,
                              float *logits, struct vs_err *err);

    /* (optional) forward() with each image in its own buffer: image i's
     * pixels are host float[C][H][W] at rows[i] (the batcher hands over the
     * submitters' buffers, so a backend that stages its input anyway copies
     * each image once instead of after a gather).  Same contract as
     * forward(): n in 1..max_batch, logits float[n][labels] in rows' order,
     * results bit-identical to forward() on the same images.  Without it,
     * the model gathers the rows into a buffer of its own and calls
     * forward() (vs_backend_forward_rows). */
    enum vs_status (*forward_rows)(void *ctx, const float *const *rows, int n,
                                   float *logits, struct vs_err *err);

    /* (optional) A human name of the device ("NVIDIA H100 80GB HBM3"). */
    const char *(*device_name)(void *ctx);

    void (*destroy)(void *ctx);

    /* (optional) Device state for health checks and metrics: lost flag,
     * memory, and the PCI bus id (for NVML) in pci_bus_id[32] ("" if none);
     * with pci_bus_id NULL only the (cheap) lost flag and reason.
     * Called from any thread, concurrently with forward(). */
    void (*status)(void *ctx, struct vs_device_status *out, char *pci_bus_id);

    /* (optional) Returns once background work started by create() that
     * changes forward()'s speed is finished.  Called from the thread that
     * calls forward(). */
    void (*settle)(void *ctx);
};

/* Runs rows[0..n) through a backend (model.c): ops->forward_rows when it
 * has one, else copies image i into gather[i][0..image_floats) and calls
 * ops->forward(gather) (gather: n * image_floats floats, unused when the
 * backend takes rows).  Checks rows and each rows[i] for NULL. */
enum vs_status vs_backend_forward_rows(const struct vs_backend_ops *ops, void *ctx,
                                       float *gather, size_t image_floats,
                                       const float *const *rows, int n, float *logits,
                                       struct vs_err *err);

extern const struct vs_backend_ops vs_backend_cpu;
#ifdef VS_HAVE_CUDA
extern const struct vs_backend_ops vs_backend_cuda;
/* Number of CUDA devices usable now (0 without a driver or device). */
int vs_cuda_device_count(void);
/* Why there are none (no driver, plugin not loadable ...), for messages. */
const char *vs_cuda_unavailable_reason(void);
#endif

#endif
