/* cmd_inspect.c: `vitserve inspect` — how image files decode: format, size
 * after EXIF orientation, Pillow's mode, orientation, and the SHA-256 of the
 * RGB8 pixels (comparable with hashing Pillow's img.convert("RGB").tobytes()). */
#include <jansson.h>
#include <stdlib.h>

#include "cli.h"
#include "commands.h"

#define MAX_FILES 65536

int vs_cmd_inspect(int argc, char **argv)
{
    struct vs_cli_model_args ma = {0};
    const struct vs_option opts[] = {VS_CLI_PIXELS_OPTION(ma)};
    char **files = calloc(MAX_FILES, sizeof *files);
    if (!files) return 1;
    int nfiles = 0, failures = 0;
    int rc = vs_options_parse("inspect", "[options] IMAGE... ('-' reads stdin)",
                              "Decode image files as the server does and print one JSON "
                              "object per line: file, format, width, height, mode, "
                              "orientation, rgb_sha256 (or file, error, status).",
                              opts, VS_ARRAY_LEN(opts), argc, argv, files, MAX_FILES, &nfiles);
    if (rc) { free(files); return rc == 1 ? 0 : rc; }
    if (nfiles == 0) {
        fprintf(stderr, "vitserve inspect: no image given (see --help)\n");
        free(files);
        return 2;
    }
    for (int i = 0; i < nfiles; i++) {
        struct vs_image img = {0};
        struct vs_err err = {0};
        json_t *o = json_object();
        json_object_set_new(o, "file", vs_cli_json_string(files[i]));
        if (vs_cli_decode_file(files[i], ma.max_pixels, &img, &err) == VS_OK) {
            uint8_t digest[32];
            char hex[65];
            vs_sha256(img.rgb, (size_t)img.width * (size_t)img.height * 3, digest);
            vs_hex(digest, 32, hex);
            json_object_set_new(o, "format", json_string(vs_image_format_name(img.format)));
            json_object_set_new(o, "width", json_integer(img.width));
            json_object_set_new(o, "height", json_integer(img.height));
            json_object_set_new(o, "mode", json_string(img.mode));
            json_object_set_new(o, "orientation",
                                img.orientation ? json_integer(img.orientation) : json_null());
            json_object_set_new(o, "rgb_sha256", json_string(hex));
        } else {
            failures++;
            json_object_set_new(o, "error", vs_cli_json_string(err.msg[0] ? err.msg : vs_status_str(err.status)));
            json_object_set_new(o, "status", json_string(vs_status_name(err.status)));
        }
        vs_image_deinit(&img);
        char *s = json_dumps(o, JSON_COMPACT);
        if (s) puts(s);
        free(s);
        json_decref(o);
    }
    free(files);
    return failures ? 1 : 0;
}
