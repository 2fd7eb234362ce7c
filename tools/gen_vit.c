/* gen_vit.c: vs-gen_vit — writes a random-weight ViTForImageClassification
 * checkpoint in Hugging Face snapshot layout (config.json,
 * preprocessor_config.json, model.safetensors or N shards plus
 * model.safetensors.index.json), with HF's exact tensor names.
 *
 *   vs-gen_vit --out DIR [--preset tiny|base] [--seed N] [--dtype F32|F16|BF16]
 *              [--round F16|BF16] [--shards N] [--image-size N] [--patch N]
 *              [--hidden N] [--layers N] [--heads N] [--mlp N] [--labels N]
 *              [--act NAME] [--no-qkv-bias] [--problem-type T] [--extra-tensor]
 *
 * Weights come from a fixed-seed PRNG (splitmix64 -> Box-Muller), each
 * tensor seeded from (seed, tensor name) so the values do not depend on
 * dtype, sharding or extra tensors.  They are scaled so that the logits depend on the
 * input (unit-ish activations: linear std ~ 1/sqrt(fan_in), LayerNorm
 * gammas near 1).  --round F16|BF16 rounds every value to that type before
 * storing it in --dtype, so an F32 checkpoint can hold exactly the values
 * of an F16/BF16 one (the loader tests compare the two).  --extra-tensor
 * adds an unused pooler tensor, as some checkpoints carry.
 * Single-threaded command-line tool; exits 0 on success, 1 on error, 2 on
 * bad usage.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "model/safetensors.h"

struct spec {
    int image, patch, hidden, layers, heads, mlp, labels, shards;
    bool qkv_bias, extra, tiny;
    const char *act, *problem_type;
    enum vs_st_dtype dtype, round;
    uint64_t seed;
};

struct tensor {
    char name[128];
    int ndim;
    int64_t shape[4];
    uint64_t numel;
    int kind;                    /* how to draw its values, see fill() */
    float scale;
    int shard;
    uint64_t begin, end;         /* in its shard's data section */
};

enum { K_NORMAL, K_GAMMA };      /* N(0, scale^2) or 1 + N(0, scale^2) */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vs-gen_vit: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- PRNG: splitmix64 + Box-Muller ------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: 53 random bits. */
static double uniform(uint64_t *s)
{
    return ((splitmix64(s) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

/* n draws: value = (kind == K_GAMMA) + scale * N(0, 1), rounded to `round`. */
static void fill(const struct tensor *t, uint64_t seed, enum vs_st_dtype round, float *out)
{
    /* Stream per (seed, tensor name): FNV-1a of the name, so values do not
     * depend on which other tensors exist. */
    uint64_t s = 0xcbf29ce484222325ull ^ seed;
    for (const char *c = t->name; *c; c++) s = (s ^ (uint8_t)*c) * 0x100000001b3ull;
    for (uint64_t i = 0; i < t->numel; i += 2) {
        double r = sqrt(-2.0 * log(uniform(&s))), th = 6.283185307179586 * uniform(&s);
        double z[2] = {r * cos(th), r * sin(th)};
        for (uint64_t j = 0; j < 2 && i + j < t->numel; j++) {
            float v = (float)((t->kind == K_GAMMA ? 1.0 : 0.0) + t->scale * z[j]);
            uint8_t b[2];
            if (round == VS_ST_F16) {
                uint16_t h = vs_st_f32_to_f16(v);
                b[0] = (uint8_t)h; b[1] = (uint8_t)(h >> 8);
                vs_st_to_f32(VS_ST_F16, b, 1, &v);
            } else if (round == VS_ST_BF16) {
                uint16_t h = vs_st_f32_to_bf16(v);
                b[0] = (uint8_t)h; b[1] = (uint8_t)(h >> 8);
                vs_st_to_f32(VS_ST_BF16, b, 1, &v);
            }
            out[i + j] = v;
        }
    }
}

/* ---- the tensor list (HF state_dict order) ------------------------------ */

static void add(struct tensor *t, int *n, const char *name, int kind, float scale, int ndim,
                int64_t a, int64_t b, int64_t c, int64_t d)
{
    struct tensor *x = &t[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->kind = kind;
    x->scale = scale;
    x->ndim = ndim;
    int64_t s[4] = {a, b, c, d};
    x->numel = 1;
    for (int i = 0; i < ndim; i++) {
        x->shape[i] = s[i];
        x->numel *= (uint64_t)s[i];
    }
}

static int list(const struct spec *sp, struct tensor *t)
{
    int n = 0;
    const int64_t D = sp->hidden, M = sp->mlp, P = sp->patch, C = 3;
    const int64_t T = (int64_t)(sp->image / sp->patch) * (sp->image / sp->patch) + 1;
    const float sd = 1.0f / sqrtf((float)D), sm = 1.0f / sqrtf((float)M);
    char b[128];
    add(t, &n, "vit.embeddings.cls_token", K_NORMAL, 0.5f, 3, 1, 1, D, 0);
    add(t, &n, "vit.embeddings.position_embeddings", K_NORMAL, 0.5f, 3, 1, T, D, 0);
    add(t, &n, "vit.embeddings.patch_embeddings.projection.weight", K_NORMAL,
        1.0f / sqrtf((float)(C * P * P)), 4, D, C, P, P);
    add(t, &n, "vit.embeddings.patch_embeddings.projection.bias", K_NORMAL, 0.05f, 1, D, 0, 0, 0);
    for (int i = 0; i < sp->layers; i++) {
        static const char *const qkv[3] = {"query", "key", "value"};
        for (int j = 0; j < 3; j++) {
            snprintf(b, sizeof b, "vit.encoder.layer.%d.attention.attention.%s.weight", i, qkv[j]);
            add(t, &n, b, K_NORMAL, sd, 2, D, D, 0, 0);
            if (sp->qkv_bias) {
                snprintf(b, sizeof b, "vit.encoder.layer.%d.attention.attention.%s.bias", i, qkv[j]);
                add(t, &n, b, K_NORMAL, 0.05f, 1, D, 0, 0, 0);
            }
        }
#define L(suffix, kind, scale, nd, x, y)                                      \
        snprintf(b, sizeof b, "vit.encoder.layer.%d." suffix, i);             \
        add(t, &n, b, kind, scale, nd, x, y, 0, 0)
        L("attention.output.dense.weight", K_NORMAL, 0.5f * sd, 2, D, D);
        L("attention.output.dense.bias", K_NORMAL, 0.05f, 1, D, 0);
        L("intermediate.dense.weight", K_NORMAL, sd, 2, M, D);
        L("intermediate.dense.bias", K_NORMAL, 0.05f, 1, M, 0);
        L("output.dense.weight", K_NORMAL, 0.5f * sm, 2, D, M);
        L("output.dense.bias", K_NORMAL, 0.05f, 1, D, 0);
        L("layernorm_before.weight", K_GAMMA, 0.1f, 1, D, 0);
        L("layernorm_before.bias", K_NORMAL, 0.05f, 1, D, 0);
        L("layernorm_after.weight", K_GAMMA, 0.1f, 1, D, 0);
        L("layernorm_after.bias", K_NORMAL, 0.05f, 1, D, 0);
#undef L
    }
    add(t, &n, "vit.layernorm.weight", K_GAMMA, 0.1f, 1, D, 0, 0, 0);
    add(t, &n, "vit.layernorm.bias", K_NORMAL, 0.05f, 1, D, 0, 0, 0);
    if (sp->extra) add(t, &n, "vit.pooler.dense.weight", K_NORMAL, sd, 2, D, D, 0, 0);
    add(t, &n, "classifier.weight", K_NORMAL, 2.0f * sd, 2, sp->labels, D, 0, 0);
    add(t, &n, "classifier.bias", K_NORMAL, 0.1f, 1, sp->labels, 0, 0, 0);
    return n;
}

/* ---- writing ------------------------------------------------------------ */

static const char *dtype_torch(enum vs_st_dtype d)
{
    return d == VS_ST_F16 ? "float16" : d == VS_ST_BF16 ? "bfloat16" : "float32";
}

static void mkdirs(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) die("mkdir %s: %s", p, strerror(errno));
        *c = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) die("mkdir %s: %s", p, strerror(errno));
}

static void dump(json_t *j, const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (json_dump_file(j, p, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_SORT_KEYS) != 0)
        die("cannot write %s", p);
    json_decref(j);
}

/* Label names that stress JSON handling (escapes, non-BMP, empty). */
static const char *const tricky[] = {
    "tabby, tabby cat", "Grandma's \"quilt\"", "caf\xc3\xa9", "back\\slash", "plain",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "emoji \xf0\x9f\x90\xb1 (non-BMP)",
    "tab\tand/slash", "ordinary label", "",
};

static void write_configs(const struct spec *sp, const char *dir)
{
    json_t *c = json_object(), *id2 = json_object(), *l2i = json_object();
    for (int i = 0; i < sp->labels; i++) {
        char key[32], name[64];
        snprintf(key, sizeof key, "%d", i);
        if (sp->tiny && i < (int)(sizeof tricky / sizeof *tricky)) snprintf(name, sizeof name, "%s", tricky[i]);
        else snprintf(name, sizeof name, "class_%d", i);
        json_object_set_new(id2, key, json_string(name));
        json_object_set_new(l2i, name, json_integer(i));
    }
    json_object_set_new(c, "architectures", json_pack("[s]", "ViTForImageClassification"));
    json_object_set_new(c, "model_type", json_string("vit"));
    json_object_set_new(c, "hidden_size", json_integer(sp->hidden));
    json_object_set_new(c, "num_hidden_layers", json_integer(sp->layers));
    json_object_set_new(c, "num_attention_heads", json_integer(sp->heads));
    json_object_set_new(c, "intermediate_size", json_integer(sp->mlp));
    json_object_set_new(c, "hidden_act", json_string(sp->act));
    json_object_set_new(c, "hidden_dropout_prob", json_real(0.0));
    json_object_set_new(c, "attention_probs_dropout_prob", json_real(0.0));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "layer_norm_eps", json_real(1e-12));
    json_object_set_new(c, "image_size", json_integer(sp->image));
    json_object_set_new(c, "patch_size", json_integer(sp->patch));
    json_object_set_new(c, "num_channels", json_integer(3));
    json_object_set_new(c, "qkv_bias", json_boolean(sp->qkv_bias));
    json_object_set_new(c, "encoder_stride", json_integer(sp->patch));
    json_object_set_new(c, "id2label", id2);
    json_object_set_new(c, "label2id", l2i);
    if (sp->problem_type) json_object_set_new(c, "problem_type", json_string(sp->problem_type));
    json_object_set_new(c, "torch_dtype", json_string(dtype_torch(sp->dtype)));
    json_object_set_new(c, "transformers_version", json_string("4.33.0.dev0"));
    dump(c, dir, "config.json");

    json_t *p = json_pack("{s:b, s:b, s:b, s:[f,f,f], s:s, s:[f,f,f], s:i, s:f, s:{s:i, s:i}}",
                          "do_normalize", 1, "do_rescale", 1, "do_resize", 1,
                          "image_mean", 0.5, 0.5, 0.5, "image_processor_type", "ViTImageProcessor",
                          "image_std", 0.5, 0.5, 0.5, "resample", 2,
                          "rescale_factor", 1.0 / 255.0, "size", "height", sp->image,
                          "width", sp->image);
    if (!p) die("internal error building preprocessor_config.json");
    dump(p, dir, "preprocessor_config.json");
}

/* Writes shard `si` (tensors with t->shard == si) to path. */
static void write_shard(const struct spec *sp, struct tensor *t, int n, int si, const char *path)
{
    size_t es = vs_st_dtype_size(sp->dtype);
    /* Header: offsets relative to the data section, in list order. */
    size_t cap = 4096 + (size_t)n * 256, len = 0;
    char *h = malloc(cap);
    if (!h) die("out of memory");
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0, maxn = 0;
    for (int i = 0; i < n; i++) {
        if (t[i].shard != si) continue;
        t[i].begin = off;
        t[i].end = off + t[i].numel * es;
        off = t[i].end;
        if (t[i].numel > maxn) maxn = t[i].numel;
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                t[i].name, vs_st_dtype_name(sp->dtype));
        for (int d = 0; d < t[i].ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)t[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)t[i].begin, (unsigned long long)t[i].end);
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';          /* pad so the data starts 8-aligned */
    if (len >= cap) die("internal error: header overflow");

    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create %s: %s", path, strerror(errno));
    uint8_t n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (uint8_t)((uint64_t)len >> (8 * i));
    float *v = malloc((maxn ? maxn : 1) * sizeof *v);
    uint8_t *raw = malloc((maxn ? maxn : 1) * es);
    if (!v || !raw) die("out of memory");
    if (fwrite(n8, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len) die("write %s failed", path);
    for (int i = 0; i < n; i++) {
        if (t[i].shard != si) continue;
        fill(&t[i], sp->seed, sp->round, v);
        const uint8_t *out = (const uint8_t *)v;
        if (sp->dtype != VS_ST_F32) {
            for (uint64_t k = 0; k < t[i].numel; k++) {
                uint16_t x = sp->dtype == VS_ST_F16 ? vs_st_f32_to_f16(v[k]) : vs_st_f32_to_bf16(v[k]);
                raw[2 * k] = (uint8_t)x;
                raw[2 * k + 1] = (uint8_t)(x >> 8);
            }
            out = raw;
        }
        size_t bytes = (size_t)(t[i].end - t[i].begin);
        if (fwrite(out, 1, bytes, f) != bytes) die("write %s failed: %s", path, strerror(errno));
    }
    if (fclose(f) != 0) die("write %s failed: %s", path, strerror(errno));
    free(v);
    free(raw);
    free(h);
}

static void write_weights(const struct spec *sp, const char *dir)
{
    struct tensor *t = calloc(16 + 16 * (size_t)sp->layers, sizeof *t);
    if (!t) die("out of memory");
    int n = list(sp, t);
    /* Split into shards of about equal bytes, keeping list order. */
    uint64_t total = 0, acc = 0;
    for (int i = 0; i < n; i++) total += t[i].numel;
    for (int i = 0; i < n; i++) {
        t[i].shard = (int)((acc * (uint64_t)sp->shards) / (total ? total : 1));
        if (t[i].shard >= sp->shards) t[i].shard = sp->shards - 1;
        acc += t[i].numel;
    }
    char path[4096], name[64];
    if (sp->shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        write_shard(sp, t, n, 0, path);
    } else {
        json_t *wm = json_object();
        for (int si = 0; si < sp->shards; si++) {
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", si + 1, sp->shards);
            snprintf(path, sizeof path, "%s/%s", dir, name);
            write_shard(sp, t, n, si, path);
            for (int i = 0; i < n; i++)
                if (t[i].shard == si) json_object_set_new(wm, t[i].name, json_string(name));
        }
        json_t *idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                                (json_int_t)(total * vs_st_dtype_size(sp->dtype)), "weight_map", wm);
        dump(idx, dir, "model.safetensors.index.json");
    }
    free(t);
}

/* ---- command line ------------------------------------------------------- */

static void usage(void)
{
    fputs("usage: vs-gen_vit --out DIR [--preset tiny|base] [--seed N] [--dtype F32|F16|BF16]\n"
          "                  [--round F16|BF16] [--shards N] [--image-size N] [--patch N]\n"
          "                  [--hidden N] [--layers N] [--heads N] [--mlp N] [--labels N]\n"
          "                  [--act NAME] [--no-qkv-bias] [--problem-type T] [--extra-tensor]\n"
          "  tiny: 32px, patch 8, hidden 48, 2 layers, 3 heads, mlp 96, 10 labels (default)\n"
          "  base: ViT-B/16 (224px, patch 16, hidden 768, 12 layers, 12 heads, mlp 3072, 1000 labels)\n",
          stderr);
    exit(2);
}

static int int_arg(const char *opt, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "vs-gen_vit: %s wants an integer in [%d, %d]\n", opt, lo, hi);
        usage();
    }
    return (int)x;
}

static enum vs_st_dtype dtype_arg(const char *opt, const char *v)
{
    if (v && strcmp(v, "F32") == 0) return VS_ST_F32;
    if (v && strcmp(v, "F16") == 0) return VS_ST_F16;
    if (v && strcmp(v, "BF16") == 0) return VS_ST_BF16;
    fprintf(stderr, "vs-gen_vit: %s wants F32, F16 or BF16\n", opt);
    usage();
    return VS_ST_F32;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *preset = "tiny";
    for (int i = 1; i < argc; i++)               /* the preset first: options override it */
        if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc) preset = argv[i + 1];
    struct spec sp = {.image = 32, .patch = 8, .hidden = 48, .layers = 2, .heads = 3, .mlp = 96,
                      .labels = 10, .shards = 1, .qkv_bias = true, .tiny = true, .act = "gelu",
                      .dtype = VS_ST_F32, .round = VS_ST_F32, .seed = 1};
    if (strcmp(preset, "base") == 0) {
        sp = (struct spec){.image = 224, .patch = 16, .hidden = 768, .layers = 12, .heads = 12,
                           .mlp = 3072, .labels = 1000, .shards = 1, .qkv_bias = true,
                           .act = "gelu", .dtype = VS_ST_F32, .round = VS_ST_F32, .seed = 1};
    } else if (strcmp(preset, "tiny") != 0) {
        fprintf(stderr, "vs-gen_vit: unknown preset '%s'\n", preset);
        usage();
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-qkv-bias") == 0) { sp.qkv_bias = false; continue; }
        if (strcmp(a, "--extra-tensor") == 0) { sp.extra = true; continue; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) usage();
        if (!v) { fprintf(stderr, "vs-gen_vit: %s needs a value\n", a); usage(); }
        i++;
        if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--preset") == 0) continue;
        else if (strcmp(a, "--seed") == 0) sp.seed = (uint64_t)int_arg(a, v, 0, 1 << 30);
        else if (strcmp(a, "--dtype") == 0) sp.dtype = dtype_arg(a, v);
        else if (strcmp(a, "--round") == 0) sp.round = dtype_arg(a, v);
        else if (strcmp(a, "--shards") == 0) sp.shards = int_arg(a, v, 1, 64);
        else if (strcmp(a, "--image-size") == 0) sp.image = int_arg(a, v, 1, 4096);
        else if (strcmp(a, "--patch") == 0) sp.patch = int_arg(a, v, 1, 4096);
        else if (strcmp(a, "--hidden") == 0) sp.hidden = int_arg(a, v, 1, 16384);
        else if (strcmp(a, "--layers") == 0) sp.layers = int_arg(a, v, 1, 256);
        else if (strcmp(a, "--heads") == 0) sp.heads = int_arg(a, v, 1, 16384);
        else if (strcmp(a, "--mlp") == 0) sp.mlp = int_arg(a, v, 1, 65536);
        else if (strcmp(a, "--labels") == 0) sp.labels = int_arg(a, v, 1, 100000);
        else if (strcmp(a, "--act") == 0) sp.act = v;
        else if (strcmp(a, "--problem-type") == 0) sp.problem_type = v;
        else { fprintf(stderr, "vs-gen_vit: unknown option %s\n", a); usage(); }
    }
    if (!out) usage();
    if (sp.image % sp.patch) die("--image-size %d is not a multiple of --patch %d", sp.image, sp.patch);
    if (sp.hidden % sp.heads) die("--heads %d does not divide --hidden %d", sp.heads, sp.hidden);
    mkdirs(out);
    write_configs(&sp, out);
    write_weights(&sp, out);
    return 0;
}
