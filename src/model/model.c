/* model.c: the model object — resolve, read config and preprocessor
 * config, open and validate the safetensors, bind the tensors to
 * struct vs_vit_weights, and hand them to a backend.
 *
 * Weights: an F32 tensor whose data is 4-byte aligned in the mapping is
 * used IN PLACE (no copy: resident memory ~ the weight bytes, shared with
 * the page cache); misaligned F32, F16 and BF16 tensors are converted into
 * one owned fp32 arena.  The mapping and the arena live as long as the
 * model, so the backend may keep pointers into them (backend.h contract).
 *
 * Loading validates every tensor the config implies (present, exact shape,
 * a float dtype) before any conversion; extra tensors (a pooler, buffers)
 * are ignored.  Threads: load/destroy on one thread; info is immutable
 * once loaded; forward one batch at a time (the backend's contract).
 * vs_model_forward_rows hands the backend per-image pointers, or, for a
 * backend without forward_rows, gathers them into m->gather (sized at load
 * for max_batch) and calls forward.
 */
#include "model_internal.h"
#include "nvml.h"
#include "safetensors.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_BATCH_LIMIT 4096

struct vs_model {
    struct vs_model_info info;
    char *spec, *dir, *name, *device_name;
    char *files[64 + 2];         /* config, preprocessor, weights (index + shards) */
    struct vs_ckpt_config cfg;
    struct vs_vit_config vc;
    struct vs_vit_weights w;     /* pointers into the mapping or the arena */
    struct vs_vit_layer *layers; /* [L] */
    struct vs_st *st;
    float *arena;                /* converted tensors (F16/BF16/misaligned F32) */
    const struct vs_backend_ops *ops;
    void *ctx;                   /* backend context, NULL without weights */
    int max_batch;
    size_t image_floats;         /* C * H * W */
    float *gather;               /* [max_batch][image_floats] for forward_rows on a
                                  * backend without it; NULL otherwise */
};

/* ---- small parsers ------------------------------------------------------ */

void vs_model_opts_default(struct vs_model_opts *o)
{
    *o = (struct vs_model_opts){
        .device = VS_DEVICE_AUTO, .device_index = 0, .precision = VS_PRECISION_FP32,
        .threads = 0, .max_batch = 32, .load_weights = true,
    };
}

static const char *const precision_names[] = {"fp32", "int8", "fp16", "bf16"};

bool vs_precision_parse(const char *s, enum vs_precision *out)
{
    for (int i = 0; s && i < (int)VS_ARRAY_LEN(precision_names); i++)
        if (strcmp(s, precision_names[i]) == 0) {
            *out = (enum vs_precision)i;
            return true;
        }
    return false;
}

const char *vs_precision_name(enum vs_precision p)
{
    return (unsigned)p < VS_ARRAY_LEN(precision_names) ? precision_names[p] : "?";
}

bool vs_device_parse(const char *s, enum vs_device *dev, int *index)
{
    if (!s) return false;
    if (strcmp(s, "auto") == 0 || strcmp(s, "cpu") == 0) {
        *dev = s[0] == 'a' ? VS_DEVICE_AUTO : VS_DEVICE_CPU;
        *index = 0;
        return true;
    }
    if (strncmp(s, "cuda", 4) != 0) return false;
    if (s[4] == '\0') {
        *dev = VS_DEVICE_CUDA;
        *index = 0;
        return true;
    }
    if (s[4] != ':' || s[5] < '0' || s[5] > '9') return false;
    long v = 0;
    for (const char *c = s + 5; *c; c++) {
        if (*c < '0' || *c > '9' || v > 1000) return false;
        v = v * 10 + (*c - '0');
    }
    if (v > 1000) return false;
    *dev = VS_DEVICE_CUDA;
    *index = (int)v;
    return true;
}

/* ---- weight binding ----------------------------------------------------- */

/* One tensor the config implies: its name, expected shape, and where its
 * fp32 pointer goes. */
struct want {
    char name[128];
    int ndim;
    int64_t shape[4];
    const float **dst;
};

static void want_add(struct want *w, int *n, const char *prefix, const char *name,
                     const float **dst, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    struct want *x = &w[(*n)++];
    if ((size_t)snprintf(x->name, sizeof x->name, "%s%s", prefix, name) >= sizeof x->name)
        x->name[0] = '\0';    /* cannot happen: names are short and fixed */
    x->ndim = ndim;
    x->shape[0] = a; x->shape[1] = b; x->shape[2] = c; x->shape[3] = d;
    x->dst = dst;
}

/* Lists every tensor of ViTForImageClassification for this config, in
 * state_dict order.  Returns the count; w must hold 8 + 16 * L entries. */
static int list_tensors(struct vs_model *m, const char *pre, struct want *w)
{
    const struct vs_vit_config *c = &m->vc;
    const int64_t D = c->hidden, T = c->tokens, C = c->channels, P = c->patch, M = c->mlp;
    struct vs_vit_weights *W = &m->w;
    int n = 0;
    char buf[128];
    want_add(w, &n, pre, "embeddings.cls_token", &W->cls, 3, 1, 1, D, 0);            /* (1,1,D) */
    want_add(w, &n, pre, "embeddings.position_embeddings", &W->pos, 3, 1, T, D, 0);   /* (1,T,D) */
    want_add(w, &n, pre, "embeddings.patch_embeddings.projection.weight", &W->patch_w,
             4, D, C, P, P);                                                         /* (D,C,P,P) */
    want_add(w, &n, pre, "embeddings.patch_embeddings.projection.bias", &W->patch_b, 1, D, 0, 0, 0);
    for (int i = 0; i < c->layers; i++) {
        struct vs_vit_layer *L = &m->layers[i];
        static const char *const qkv[3] = {"query", "key", "value"};
        const float **qkv_w[3] = {&L->q_w, &L->k_w, &L->v_w};
        const float **qkv_b[3] = {&L->q_b, &L->k_b, &L->v_b};
        for (int j = 0; j < 3; j++) {
            snprintf(buf, sizeof buf, "encoder.layer.%d.attention.attention.%s.weight", i, qkv[j]);
            want_add(w, &n, pre, buf, qkv_w[j], 2, D, D, 0, 0);                       /* (D,D) */
            if (m->cfg.qkv_bias) {
                snprintf(buf, sizeof buf, "encoder.layer.%d.attention.attention.%s.bias", i, qkv[j]);
                want_add(w, &n, pre, buf, qkv_b[j], 1, D, 0, 0, 0);
            }
        }
#define LAYER(suffix, dst, nd, a, b)                                              \
        snprintf(buf, sizeof buf, "encoder.layer.%d." suffix, i);                 \
        want_add(w, &n, pre, buf, dst, nd, a, b, 0, 0)
        LAYER("attention.output.dense.weight", &L->o_w, 2, D, D);   /* (D,D) */
        LAYER("attention.output.dense.bias", &L->o_b, 1, D, 0);
        LAYER("intermediate.dense.weight", &L->fc1_w, 2, M, D);     /* (M,D) */
        LAYER("intermediate.dense.bias", &L->fc1_b, 1, M, 0);
        LAYER("output.dense.weight", &L->fc2_w, 2, D, M);           /* (D,M) */
        LAYER("output.dense.bias", &L->fc2_b, 1, D, 0);
        LAYER("layernorm_before.weight", &L->ln1_g, 1, D, 0);
        LAYER("layernorm_before.bias", &L->ln1_b, 1, D, 0);
        LAYER("layernorm_after.weight", &L->ln2_g, 1, D, 0);
        LAYER("layernorm_after.bias", &L->ln2_b, 1, D, 0);
#undef LAYER
    }
    want_add(w, &n, pre, "layernorm.weight", &W->lnf_g, 1, D, 0, 0, 0);
    want_add(w, &n, pre, "layernorm.bias", &W->lnf_b, 1, D, 0, 0, 0);
    /* The head is outside the "vit." base model. */
    want_add(w, &n, "", "classifier.weight", &W->head_w, 2, c->labels, D, 0, 0);     /* (labels,D) */
    want_add(w, &n, "", "classifier.bias", &W->head_b, 1, c->labels, 0, 0, 0);
    return n;
}

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape)
{
    size_t l = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && l < n; i++)
        l += (size_t)snprintf(out + l, n - l, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (l < n) snprintf(out + l, n - l, "]");
}

static bool is_aligned_f32(const struct vs_st_tensor *t)
{
    return t->dtype == VS_ST_F32 && ((uintptr_t)t->data & 3u) == 0;
}

/* Validates every wanted tensor, then (when load) binds fp32 pointers:
 * aligned F32 in place, the rest converted into one arena. */
static enum vs_status bind_weights(struct vs_model *m, bool load, struct vs_err *err)
{
    const struct vs_st *st = m->st;
    /* HF's full-model names start with "vit."; accept a bare base-model
     * naming too (same tensors, no prefix). */
    const char *pre = "vit.";
    if (!vs_st_find(st, "vit.embeddings.cls_token") && vs_st_find(st, "embeddings.cls_token"))
        pre = "";
    size_t cap = 8 + 16 * (size_t)m->vc.layers;
    struct want *w = calloc(cap, sizeof *w);
    if (!w) return vs_err_set(err, VS_NOMEM, "out of memory");
    int n = list_tensors(m, pre, w);
    VS_ASSERT((size_t)n <= cap);

    enum vs_status s = VS_OK;
    uint64_t params = 0, convert = 0;     /* floats to put in the arena */
    int dtype_seen = -1;
    bool mixed = false;
    const char *where = vs_st_file(st, 0); /* the index or the single file */
    for (int i = 0; i < n; i++) {
        const struct vs_st_tensor *t = vs_st_find(st, w[i].name);
        char want_s[96], got_s[160];
        shape_str(want_s, sizeof want_s, w[i].ndim, w[i].shape);
        if (!t) {
            s = vs_err_set(err, VS_BAD_INPUT,
                           "%s: tensor '%s': missing (expected shape %s for this config.json)",
                           where, w[i].name, want_s);
            goto out;
        }
        const char *tf = vs_st_path_of(st, t);
        if (t->dtype != VS_ST_F32 && t->dtype != VS_ST_F16 && t->dtype != VS_ST_BF16) {
            s = vs_err_set(err, VS_UNSUPPORTED,
                           "%s: tensor '%s': dtype %s is not supported (F32, F16 or BF16)",
                           tf, w[i].name, vs_st_dtype_name(t->dtype));
            goto out;
        }
        bool same = t->ndim == w[i].ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == w[i].shape[d];
        if (!same) {
            shape_str(got_s, sizeof got_s, t->ndim, t->shape);
            s = vs_err_set(err, VS_BAD_INPUT,
                           "%s: tensor '%s': shape %s, but config.json implies %s",
                           tf, w[i].name, got_s, want_s);
            goto out;
        }
        params += t->numel;
        if (!is_aligned_f32(t)) convert += t->numel;
        if (dtype_seen < 0) dtype_seen = (int)t->dtype;
        else if (dtype_seen != (int)t->dtype) mixed = true;
    }
    m->info.num_params = params;
    m->info.dtype = mixed ? "mixed" : vs_st_dtype_name((enum vs_st_dtype)dtype_seen);
    if (!load) goto out;

    if (convert) {
        size_t bytes;
        if (convert > SIZE_MAX / 4 || !vs_mul_size((size_t)convert, 4, &bytes) ||
            !(m->arena = malloc(bytes))) {
            s = vs_err_set(err, VS_NOMEM, "out of memory converting %llu weights to fp32",
                           (unsigned long long)convert);
            goto out;
        }
    }
    float *next = m->arena;
    m->w.file_backed = true;   /* aligned F32 tensors point into vs_st's mmap */
    m->w.arena = m->arena;
    m->w.arena_floats = (size_t)convert;
    for (int i = 0; i < n; i++) {
        const struct vs_st_tensor *t = vs_st_find(st, w[i].name);
        if (is_aligned_f32(t)) {
            *w[i].dst = (const float *)(const void *)t->data;   /* in place */
        } else {
            vs_st_to_f32(t->dtype, t->data, (size_t)t->numel, next);
            *w[i].dst = next;
            next += t->numel;
        }
    }
out:
    free(w);
    return s;
}

/* ---- loading ------------------------------------------------------------ */

static enum vs_status path_join(char *out, size_t n, const char *dir, const char *name,
                                struct vs_err *err)
{
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n)
        return vs_err_set(err, VS_BAD_INPUT, "%s: path too long", dir);
    return VS_OK;
}

static enum vs_status add_file(struct vs_model *m, const char *path, struct vs_err *err)
{
    if (m->info.num_files >= (int)VS_ARRAY_LEN(m->files))
        return vs_err_set(err, VS_UNSUPPORTED, "%s: more than %d files (shards)", path,
                          (int)VS_ARRAY_LEN(m->files) - 2);
    if (!(m->files[m->info.num_files] = strdup(path)))
        return vs_err_set(err, VS_NOMEM, "out of memory");
    m->info.num_files++;
    return VS_OK;
}

/* Short name: the hub id without revision, or the folder's basename. */
static char *short_name(const char *spec, const char *dir, bool is_folder)
{
    if (!is_folder) {
        const char *at = strchr(spec, '@');
        return strndup(spec, at ? (size_t)(at - spec) : strlen(spec));
    }
    const char *b = strrchr(dir, '/');
    return strdup(b && b[1] ? b + 1 : dir);
}

/* "model name" from /proc/cpuinfo, or "cpu". */
static char *cpu_name(void)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (!c) break;
                c++;
                while (*c == ' ' || *c == '\t') c++;
                c[strcspn(c, "\n")] = '\0';
                fclose(f);
                return strdup(c);
            }
        }
        fclose(f);
    }
    return strdup("cpu");
}

/* 2 x multiply-adds of one image's forward pass.
 * Per image (N = patches, T = N + 1, D, M, L, labels):
 *   patch embedding  N * D * C*P*P
 *   per layer        Q, K, V, O: 4 * T * D * D; scores Q K^T: T * T * D
 *                    (all heads); probs V: T * T * D; MLP: 2 * T * D * M
 *   classifier       D * labels (CLS token only) */
double vs_vit_flops(const struct vs_vit_config *c)
{
    double N = (double)c->grid_h * c->grid_w, T = c->tokens, D = c->hidden, M = c->mlp;
    double macs = N * D * c->channels * c->patch * c->patch;
    macs += c->layers * (4 * T * D * D + 2 * T * T * D + 2 * T * D * M);
    macs += D * c->labels;
    return 2 * macs;
}

static enum vs_status pick_backend(const struct vs_model_opts *o,
                                   const struct vs_backend_ops **ops, struct vs_err *err)
{
    enum vs_device dev = o->device;
#ifdef VS_HAVE_CUDA
    if (dev == VS_DEVICE_AUTO) dev = vs_cuda_device_count() > 0 ? VS_DEVICE_CUDA : VS_DEVICE_CPU;
    if (dev == VS_DEVICE_CUDA) {
        int count = vs_cuda_device_count();
        if (o->device_index < 0 || o->device_index >= count)
            return vs_err_set(err, VS_UNSUPPORTED, "CUDA device %d requested, %d available (%s)",
                              o->device_index, count, vs_cuda_unavailable_reason());
        *ops = &vs_backend_cuda;
        return VS_OK;
    }
#else
    if (dev == VS_DEVICE_CUDA)
        return vs_err_set(err, VS_UNSUPPORTED,
                          "CUDA requested, but this build has no CUDA backend (built without nvcc)");
#endif
    *ops = &vs_backend_cpu;
    return VS_OK;
}

static enum vs_status load(struct vs_model *m, const char *spec,
                           const struct vs_model_opts *o, struct vs_err *err)
{
    enum vs_status s;
    char dir[4096], path[4096 + 64];
    if ((s = vs_model_resolve(spec, dir, sizeof dir, err))) return s;
    struct stat sb;
    bool is_folder = stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!(m->spec = strdup(spec)) || !(m->dir = strdup(dir)) ||
        !(m->name = short_name(spec, dir, is_folder)))
        return vs_err_set(err, VS_NOMEM, "out of memory");

    /* config.json -> the network's shape. */
    if ((s = path_join(path, sizeof path, dir, "config.json", err))) return s;
    if ((s = vs_ckpt_config_load(path, &m->cfg, err))) return s;
    if ((s = add_file(m, path, err))) return s;
    const struct vs_ckpt_config *c = &m->cfg;
    m->vc = (struct vs_vit_config){
        .channels = c->channels, .image_h = c->image_h, .image_w = c->image_w,
        .patch = c->patch, .grid_h = c->image_h / c->patch, .grid_w = c->image_w / c->patch,
        .hidden = c->hidden, .heads = c->heads, .mlp = c->mlp, .layers = c->layers,
        .labels = c->num_labels, .ln_eps = (float)c->ln_eps, .act = c->act,
    };
    m->vc.tokens = m->vc.grid_h * m->vc.grid_w + 1;

    /* preprocessor_config.json (optional) -> struct vs_preproc. */
    if ((s = path_join(path, sizeof path, dir, "preprocessor_config.json", err))) return s;
    if (stat(path, &sb) == 0) {
        uint8_t *text;
        size_t len;
        if ((s = vs_read_file(path, 16u << 20, &text, &len, err))) return s;
        s = vs_preproc_parse((const char *)text, len, path, c->image_h, c->image_w,
                             &m->info.preproc, err);
        free(text);
        if (s) return s;
        if ((s = add_file(m, path, err))) return s;
    } else {
        vs_preproc_defaults(c->image_h, c->image_w, &m->info.preproc);
        m->info.preproc_defaults = true;
    }

    /* Weights: open + validate every header, then bind the tensors. */
    if ((s = vs_st_open_dir(dir, &m->st, err))) return s;
    for (int i = 0; i < vs_st_num_files(m->st); i++)
        if ((s = add_file(m, vs_st_file(m->st, i), err))) return s;
    if (!(m->layers = calloc((size_t)c->layers, sizeof *m->layers)))
        return vs_err_set(err, VS_NOMEM, "out of memory");
    m->w.layer = m->layers;
    if ((s = bind_weights(m, o->load_weights, err))) return s;
    m->info.weight_bytes = vs_st_data_bytes(m->st);

    /* 0 = the cores we may run on (affinity mask: taskset, a cpuset), as
     * the CPU backend counts them, not every core of the machine */
    m->info.threads = o->threads > 0 ? o->threads : omp_get_num_procs();
    if (m->info.threads < 1) m->info.threads = 1;
    if (!o->load_weights) return VS_OK;

    /* The backend: CUDA when built and present (AUTO), else CPU. */
    if ((s = pick_backend(o, &m->ops, err))) return s;
    struct vs_backend_opts bo = {
        .precision = o->precision, .threads = o->threads, .max_batch = o->max_batch,
        .device_index = o->device_index, .prepack = o->prepack,
    };
    if ((s = m->ops->create(&m->vc, &m->w, &bo, &m->ctx, err))) {
        m->ctx = NULL;
        char who[64];   /* "cpu backend", unless the message names it already */
        snprintf(who, sizeof who, "%s backend", m->ops->name);
        if (err && strncmp(err->msg, who, strlen(who))) vs_err_prefix(err, "%s", who);
        return s;
    }
    const char *dn = m->ops->device_name ? m->ops->device_name(m->ctx) : NULL;
    m->device_name = dn ? strdup(dn) : cpu_name();
    if (!m->device_name) return vs_err_set(err, VS_NOMEM, "out of memory");
    /* vs_model_forward_rows on a backend that takes one contiguous batch
     * only: a gather buffer, allocated now rather than per call. */
    m->image_floats = (size_t)m->vc.channels * (size_t)m->vc.image_h * (size_t)m->vc.image_w;
    if (!m->ops->forward_rows) {
        size_t count, bytes;
        if (!vs_mul_size(m->image_floats, (size_t)o->max_batch, &count) ||
            !vs_mul_size(count, sizeof(float), &bytes) || !(m->gather = malloc(bytes)))
            return vs_err_set(err, VS_NOMEM, "out of memory for a batch of %d images",
                              o->max_batch);
    }
    return VS_OK;
}

/* Points the public info at the model's own storage. */
static void fill_info(struct vs_model *m, const struct vs_model_opts *o)
{
    struct vs_model_info *i = &m->info;
    const struct vs_ckpt_config *c = &m->cfg;
    i->spec = m->spec;
    i->dir = m->dir;
    i->name = m->name;
    i->architecture = c->architecture;
    i->model_type = c->model_type;
    i->problem_type = c->problem_type;
    i->hidden_act = c->hidden_act;
    i->image_height = c->image_h;
    i->image_width = c->image_w;
    i->patch_size = c->patch;
    i->num_channels = c->channels;
    i->hidden_size = c->hidden;
    i->num_layers = c->layers;
    i->num_heads = c->heads;
    i->intermediate_size = c->mlp;
    i->num_tokens = m->vc.tokens;
    i->layer_norm_eps = c->ln_eps;
    i->qkv_bias = c->qkv_bias;
    i->num_labels = c->num_labels;
    i->labels = (const char *const *)c->labels;
    i->files = (const char *const *)m->files;
    i->default_score_fn = c->score_fn;
    i->backend = m->ops && m->ctx ? m->ops->name : "";
    i->device_name = m->device_name ? m->device_name : "";
    i->precision = o->precision;
    i->flops_per_image = vs_vit_flops(&m->vc);
}

enum vs_status vs_model_load(const char *spec, const struct vs_model_opts *opts,
                             struct vs_model **out, struct vs_err *err)
{
    struct vs_model_opts o;
    if (opts) o = *opts;
    else vs_model_opts_default(&o);
    if (o.max_batch < 1 || o.max_batch > MAX_BATCH_LIMIT)
        return vs_err_set(err, VS_BAD_INPUT, "max_batch %d is out of range [1, %d]",
                          o.max_batch, MAX_BATCH_LIMIT);
    if (o.threads < 0) return vs_err_set(err, VS_BAD_INPUT, "threads %d < 0", o.threads);
    struct vs_model *m = calloc(1, sizeof *m);
    if (!m) return vs_err_set(err, VS_NOMEM, "out of memory");
    m->max_batch = o.max_batch;
    m->info.dtype = "";
    enum vs_status s = load(m, spec, &o, err);
    if (s) {
        vs_model_destroy(m);
        return s;
    }
    fill_info(m, &o);
    *out = m;
    return VS_OK;
}

void vs_model_destroy(struct vs_model *m)
{
    if (!m) return;
    if (m->ops && m->ctx) m->ops->destroy(m->ctx);
    vs_st_close(m->st);
    free(m->arena);
    free(m->gather);
    free(m->layers);
    vs_ckpt_config_free(&m->cfg);
    for (int i = 0; i < m->info.num_files; i++) free(m->files[i]);
    free(m->spec);
    free(m->dir);
    free(m->name);
    free(m->device_name);
    free(m);
}

const struct vs_model_info *vs_model_info(const struct vs_model *m)
{
    return &m->info;
}

/* What every forward entry point checks first. */
static enum vs_status check_forward(const struct vs_model *m, int n, struct vs_err *err)
{
    if (!m->ctx)
        return vs_err_set(err, VS_UNSUPPORTED, "%s: model was loaded without weights", m->name);
    if (n < 1 || n > m->max_batch)
        return vs_err_set(err, VS_BAD_INPUT, "batch of %d images: must be 1..%d (max_batch)",
                          n, m->max_batch);
    return VS_OK;
}

enum vs_status vs_model_forward(struct vs_model *m, const float *pixels, int n,
                                float *logits, struct vs_err *err)
{
    enum vs_status st = check_forward(m, n, err);
    if (st) return st;
    if (!pixels || !logits) return vs_err_set(err, VS_BAD_INPUT, "NULL pixels or logits");
    return m->ops->forward(m->ctx, pixels, n, logits, err);
}

enum vs_status vs_backend_forward_rows(const struct vs_backend_ops *ops, void *ctx,
                                       float *gather, size_t image_floats,
                                       const float *const *rows, int n, float *logits,
                                       struct vs_err *err)
{
    if (!rows || !logits) return vs_err_set(err, VS_BAD_INPUT, "NULL rows or logits");
    for (int i = 0; i < n; i++)
        if (!rows[i])
            return vs_err_set(err, VS_BAD_INPUT, "image %d of %d: NULL pixels", i, n);
    if (ops->forward_rows) return ops->forward_rows(ctx, rows, n, logits, err);
    if (!gather) return vs_err_set(err, VS_BAD_INPUT, "%s backend: no gather buffer", ops->name);
    for (int i = 0; i < n; i++)
        memcpy(gather + (size_t)i * image_floats, rows[i], image_floats * sizeof(float));
    return ops->forward(ctx, gather, n, logits, err);
}

enum vs_status vs_model_forward_rows(struct vs_model *m, const float *const *rows, int n,
                                     float *logits, struct vs_err *err)
{
    enum vs_status st = check_forward(m, n, err);
    if (st) return st;
    return vs_backend_forward_rows(m->ops, m->ctx, m->gather, m->image_floats, rows, n,
                                   logits, err);
}

void vs_model_device_status(struct vs_model *m, struct vs_device_status *out)
{
    memset(out, 0, sizeof *out);
    out->utilization = -1;
    if (!m || !m->ops || !m->ctx || !m->ops->status) return;
    char pci[32] = "";
    m->ops->status(m->ctx, out, pci);
    out->utilization = vs_nvml_utilization(pci);
}

void vs_model_settle(struct vs_model *m)
{
    if (m && m->ops && m->ctx && m->ops->settle) m->ops->settle(m->ctx);
}

bool vs_model_device_lost(struct vs_model *m, char *why)
{
    if (!m || !m->ops || !m->ctx || !m->ops->status) return false;
    struct vs_device_status st;
    memset(&st, 0, sizeof st);
    m->ops->status(m->ctx, &st, NULL);
    if (st.lost && why) snprintf(why, sizeof st.why, "%s", st.why);
    return st.lost;
}

enum vs_status vs_model_check_image_size(const struct vs_model_info *mi, int img_w,
                                         int img_h, struct vs_err *err)
{
    const struct vs_preproc *p = &mi->preproc;
    int h = p->do_resize ? p->height : img_h;
    int w = p->do_resize ? p->width : img_w;
    if (h != mi->image_height || w != mi->image_width)
        return vs_err_set(err, VS_BAD_INPUT,
                          "image is %dx%d after preprocessing but the model takes %dx%d "
                          "(its preprocessor does not resize)",
                          w, h, mi->image_width, mi->image_height);
    return VS_OK;
}
