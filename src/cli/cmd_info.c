/* cmd_info.c: `vitserve info` — describe a checkpoint without running it
 * (weights are validated but no backend is created). */
#include <jansson.h>
#include <stdlib.h>

#include "cli.h"
#include "commands.h"

static const char *const resample_names[] = {"nearest", "lanczos", "bilinear",
                                             "bicubic", "box", "hamming"};

int vs_cmd_info(int argc, char **argv)
{
    struct vs_cli_model_args ma = {0};
    bool as_json = false;
    const struct vs_option opts[] = {
        VS_CLI_MODEL_SPEC_OPTION(ma),
        {"json", 0, NULL, VS_OPT_FLAG, &as_json, 0, -1, NULL, NULL, "print JSON", NULL},
    };
    char *pos[1];
    int npos = 0;
    int rc = vs_options_parse("info", "--model M [--json]",
                              "Describe a checkpoint: architecture, sizes, labels, dtype, "
                              "parameter count, preprocessing and files.",
                              opts, VS_ARRAY_LEN(opts), argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    struct vs_model_opts mo;
    if (!vs_cli_model_opts("info", &ma, &mo)) return 2;
    mo.load_weights = false;
    struct vs_model *m = NULL;
    struct vs_err err = {0};
    if (vs_model_load(ma.model, &mo, &m, &err) != VS_OK) {
        fprintf(stderr, "vitserve info: cannot load model '%s': %s\n", ma.model, err.msg);
        return 1;
    }
    const struct vs_model_info *mi = vs_model_info(m);
    const struct vs_preproc *p = &mi->preproc;
    const char *rs = (unsigned)p->resample < 6 ? resample_names[p->resample] : "?";
    if (as_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:b, s:i, s:s, s:I, s:I, s:f}",
            "model", mi->spec, "dir", mi->dir, "architecture", mi->architecture,
            "model_type", mi->model_type, "problem_type", mi->problem_type,
            "hidden_act", mi->hidden_act, "image_height", mi->image_height,
            "image_width", mi->image_width, "patch_size", mi->patch_size,
            "num_channels", mi->num_channels, "hidden_size", mi->hidden_size,
            "num_layers", mi->num_layers, "num_heads", mi->num_heads,
            "intermediate_size", mi->intermediate_size, "num_tokens", mi->num_tokens,
            "layer_norm_eps", mi->layer_norm_eps, "qkv_bias", mi->qkv_bias,
            "num_labels", mi->num_labels, "dtype", mi->dtype,
            "num_params", (json_int_t)mi->num_params, "weight_bytes", (json_int_t)mi->weight_bytes,
            "gflops_per_image", mi->flops_per_image / 1e9);
        json_t *labels = json_array(), *files = json_array();
        for (int i = 0; i < mi->num_labels; i++) json_array_append_new(labels, json_string(mi->labels[i]));
        for (int i = 0; i < mi->num_files; i++) json_array_append_new(files, json_string(mi->files[i]));
        json_object_set_new(o, "labels", labels);
        json_object_set_new(o, "files", files);
        json_object_set_new(o, "preprocessor", json_pack("{s:b, s:b, s:i, s:i, s:s, s:b, s:f, s:b, s:[f,f,f], s:[f,f,f]}",
            "defaults", mi->preproc_defaults, "do_resize", p->do_resize, "height", p->height, "width", p->width, "resample", rs,
            "do_rescale", p->do_rescale, "rescale_factor", p->rescale_factor,
            "do_normalize", p->do_normalize,
            "image_mean", (double)p->image_mean[0], (double)p->image_mean[1], (double)p->image_mean[2],
            "image_std", (double)p->image_std[0], (double)p->image_std[1], (double)p->image_std[2]));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("model          %s\n", mi->spec);
        printf("folder         %s\n", mi->dir);
        printf("architecture   %s (model_type %s%s%s)\n", mi->architecture, mi->model_type,
               mi->problem_type[0] ? ", " : "", mi->problem_type);
        printf("input          %d x %d x %d, patch %d -> %d tokens\n", mi->num_channels,
               mi->image_height, mi->image_width, mi->patch_size, mi->num_tokens);
        printf("encoder        %d layers, hidden %d, %d heads, mlp %d, %s, eps %g%s\n",
               mi->num_layers, mi->hidden_size, mi->num_heads, mi->intermediate_size,
               mi->hidden_act, mi->layer_norm_eps, mi->qkv_bias ? "" : ", no qkv bias");
        printf("labels         %d:", mi->num_labels);
        for (int i = 0; i < mi->num_labels && i < 5; i++) printf(" [%d] %s%s", i, mi->labels[i], i < 4 && i + 1 < mi->num_labels ? "," : "");
        printf("%s\n", mi->num_labels > 5 ? " ..." : "");
        printf("parameters     %llu (%s, %.1f MiB of tensor data)\n",
               (unsigned long long)mi->num_params, mi->dtype, (double)mi->weight_bytes / 1048576.0);
        printf("compute        %.2f GFLOP per image\n", mi->flops_per_image / 1e9);
        printf("preprocessing  %sresize %s to %dx%d %s, rescale %s %.9g, normalize %s mean [%g %g %g] std [%g %g %g]\n",
               mi->preproc_defaults ? "(defaults: no preprocessor_config.json) " : "",
               p->do_resize ? "on" : "off", p->width, p->height, rs, p->do_rescale ? "on" : "off",
               p->rescale_factor, p->do_normalize ? "on" : "off",
               (double)p->image_mean[0], (double)p->image_mean[1], (double)p->image_mean[2],
               (double)p->image_std[0], (double)p->image_std[1], (double)p->image_std[2]);
        for (int i = 0; i < mi->num_files; i++) printf("file           %s\n", mi->files[i]);
    }
    vs_model_destroy(m);
    return 0;
}
