/* cli.c: shared plumbing of the subcommands (see cli.h). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "serve/jbuf.h"

bool vs_cli_model_opts(const char *cmd, const struct vs_cli_model_args *a,
                       struct vs_model_opts *o)
{
    vs_model_opts_default(o);
    if (!a->device && !a->precision) return true;   /* a command that computes nothing */
    if (!vs_device_parse(a->device ? a->device : "auto", &o->device, &o->device_index)) {
        fprintf(stderr, "vitserve %s: --device: '%s' is not auto, cpu, cuda or cuda:N\n",
                cmd, a->device);
        return false;
    }
    if (!vs_precision_parse(a->precision ? a->precision : "fp32", &o->precision)) {
        fprintf(stderr, "vitserve %s: --precision: '%s' is not fp32, int8, fp16 or bf16\n",
                cmd, a->precision);
        return false;
    }
    o->threads = a->threads;
    o->prepack = a->prepack;
    return true;
}

struct vs_model *vs_cli_load_model(const char *cmd, const struct vs_cli_model_args *a,
                                   int max_batch, bool load_weights)
{
    struct vs_model_opts o;
    if (!vs_cli_model_opts(cmd, a, &o)) return NULL;
    o.max_batch = max_batch;
    o.load_weights = load_weights;
    struct vs_model *m = NULL;
    struct vs_err err = {0};
    if (vs_model_load(a->model, &o, &m, &err) != VS_OK) {
        fprintf(stderr, "vitserve %s: cannot load model '%s': %s\n", cmd, a->model,
                err.msg[0] ? err.msg : vs_status_str(err.status));
        return NULL;
    }
    if (vs_model_info(m)->preproc_defaults)
        fprintf(stderr, "vitserve %s: warning: %s: " VS_MODEL_PREPROC_DEFAULTS_WARNING "\n", cmd,
                vs_model_info(m)->dir);
    return m;
}

enum vs_status vs_cli_decode_file(const char *path, uint64_t max_pixels,
                                  struct vs_image *img, struct vs_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    enum vs_status st = vs_read_file(path, (size_t)1 << 31, &data, &len, err);
    if (st != VS_OK) return st;
    struct vs_image_limits lim = {.max_pixels = max_pixels};
    st = vs_image_decode(data, len, &lim, img, err);
    free(data);
    return st;
}

json_t *vs_cli_json_string(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    /* Not UTF-8: jbuf's escaper writes U+FFFD for each bad byte; parse
     * the literal it makes back into a string. */
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    vs_jbuf_json_cstr(&b, s);
    j = b.failed ? NULL : json_loadb(b.data, b.len, JSON_DECODE_ANY, NULL);
    vs_jbuf_deinit(&b);
    return j;
}

size_t vs_cli_input_floats(const struct vs_model_info *mi)
{
    return (size_t)mi->num_channels * (size_t)mi->image_height * (size_t)mi->image_width;
}

enum vs_status vs_cli_preprocess(const struct vs_image *img, const struct vs_model_info *mi,
                                 float *out, struct vs_err *err)
{
    enum vs_status st = vs_model_check_image_size(mi, img->width, img->height, err);
    return st != VS_OK ? st : vs_image_preprocess(img, &mi->preproc, out, err);
}
