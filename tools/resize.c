/* resize.c (vs-resize): Pillow-identical resize of a raw RGB8 image, for
 * tests and benchmarks.
 *
 *   vs-resize FILTER SW SH DW DH < in.rgb > out.rgb
 *   vs-resize --bench N FILTER SW SH DW DH < in.rgb   (prints min/mean ms per call)
 *
 * FILTER is Pillow's number (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC,
 * 4 BOX, 5 HAMMING) or its name.  Reads exactly SW*SH*3 bytes from stdin,
 * writes DW*DH*3 bytes to stdout.  Exit 0 on success, 1 with a message on
 * stderr on any error (bad arguments, short input, resize failure).
 * Single-threaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/vs.h"
#include "image/image.h"

static int parse_int(const char *s, const char *what, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 100000000) {
        fprintf(stderr, "vs-resize: %s must be an integer in 1..100000000, got '%s'\n", what, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_filter(const char *s, int *out)
{
    static const char *names[] = {"nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"};
    for (int i = 0; i < (int)VS_ARRAY_LEN(names); i++)
        if (!strcasecmp(s, names[i])) return *out = i, 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < -1000 || v > 1000) {
        fprintf(stderr, "vs-resize: FILTER must be 0..5 or a name, got '%s'\n", s);
        return -1;
    }
    *out = (int)v;     /* out-of-range numbers go through, to test the error path */
    return 0;
}

int main(int argc, char **argv)
{
    int bench = 0;
    if (argc > 2 && !strcmp(argv[1], "--bench")) {
        if (parse_int(argv[2], "N", &bench)) return 1;
        argc -= 2;
        argv += 2;
    }
    if (argc != 6) {
        fprintf(stderr, "usage: vs-resize [--bench N] FILTER SW SH DW DH < in.rgb > out.rgb\n");
        return 1;
    }
    int filter, sw, sh, dw, dh;
    if (parse_filter(argv[1], &filter) || parse_int(argv[2], "SW", &sw) ||
        parse_int(argv[3], "SH", &sh) || parse_int(argv[4], "DW", &dw) ||
        parse_int(argv[5], "DH", &dh))
        return 1;
    size_t in_len = (size_t)sw * sh * 3, out_len = (size_t)dw * dh * 3;
    uint8_t *in = malloc(in_len), *out = malloc(out_len);
    int rc = 1;
    if (!in || !out) {
        fprintf(stderr, "vs-resize: out of memory\n");
        goto done;
    }
    if (fread(in, 1, in_len, stdin) != in_len) {
        fprintf(stderr, "vs-resize: stdin holds fewer than %dx%dx3 = %zu bytes\n", sw, sh, in_len);
        goto done;
    }
    struct vs_err err = {0};
    double total = 0, best = 1e300;
    for (int i = 0; i < (bench ? bench : 1); i++) {
        double t0 = vs_now_ms();
        if (vs_image_resize(in, sw, sh, out, dw, dh, (enum vs_resample)filter, &err) != VS_OK) {
            fprintf(stderr, "vs-resize: %s\n", err.msg[0] ? err.msg : vs_status_str(err.status));
            goto done;
        }
        double dt = vs_now_ms() - t0;
        total += dt;
        best = dt < best ? dt : best;
    }
    if (bench) {
        /* the minimum is the figure to quote on a shared machine */
        printf("%dx%d -> %dx%d filter %d: min %.3f ms, mean %.3f ms (%d calls)\n", sw, sh,
               dw, dh, filter, best, total / bench, bench);
    } else if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        fprintf(stderr, "vs-resize: write to stdout failed\n");
        goto done;
    }
    rc = 0;
done:
    free(in);
    free(out);
    return rc;
}
