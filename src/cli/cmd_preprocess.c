/* cmd_preprocess.c: `vitserve preprocess` — write the model's input tensor
 * for one image: raw little-endian float32 [3][H][W], exactly what
 * ViTImageProcessor gives as pixel_values[0]. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

int vs_cmd_preprocess(int argc, char **argv)
{
    struct vs_cli_model_args ma = {0};
    const char *out_path = NULL;
    const struct vs_option opts[] = {
        VS_CLI_MODEL_SPEC_OPTION(ma),
        {"output", 'o', NULL, VS_OPT_STRING, &out_path, 0, -1, NULL, "FILE",
         "where to write the float32 tensor ('-' = stdout)", NULL},
        VS_CLI_PIXELS_OPTION(ma),
    };
    char *files[1];
    int nfiles = 0;
    int rc = vs_options_parse("preprocess", "--model M IMAGE -o FILE",
                              "Write the preprocessed tensor (raw little-endian float32, "
                              "[channels][height][width]) that the model would see.",
                              opts, VS_ARRAY_LEN(opts), argc, argv, files, 1, &nfiles);
    if (rc) return rc == 1 ? 0 : rc;
    if (nfiles != 1 || !out_path) {
        fprintf(stderr, "vitserve preprocess: need one IMAGE and -o FILE (see --help)\n");
        return 2;
    }
    struct vs_model *m = vs_cli_load_model("preprocess", &ma, 1, false);
    if (!m) return 1;
    const struct vs_model_info *mi = vs_model_info(m);
    size_t n = vs_cli_input_floats(mi);
    float *px = malloc(n * sizeof *px);
    struct vs_image img = {0};
    struct vs_err err = {0};
    rc = 1;
    if (!px) {
        fprintf(stderr, "vitserve preprocess: out of memory\n");
        goto out;
    }
    if (vs_cli_decode_file(files[0], ma.max_pixels, &img, &err) != VS_OK ||
        vs_cli_preprocess(&img, mi, px, &err) != VS_OK) {
        fprintf(stderr, "vitserve preprocess: %s: %s\n", files[0],
                err.msg[0] ? err.msg : vs_status_str(err.status));
        goto out;
    }
    FILE *f = strcmp(out_path, "-") ? fopen(out_path, "wb") : stdout;
    if (!f) {
        perror(out_path);
        goto out;
    }
    /* x86-64 and every target we build for are little-endian. */
    size_t wrote = fwrite(px, sizeof *px, n, f);
    if ((f != stdout && fclose(f) != 0) || wrote != n) {
        fprintf(stderr, "vitserve preprocess: %s: write failed\n", out_path);
        goto out;
    }
    rc = 0;
out:
    vs_image_deinit(&img);
    free(px);
    vs_model_destroy(m);
    return rc;
}
