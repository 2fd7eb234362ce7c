/* fuzz_preproc_config.c: vs_preproc_parse() (src/model/config.c) on
 * arbitrary bytes taken as preprocessor_config.json, against a 224x224
 * and a 32x32 model (the fixture's size), then — when it parses — the
 * parsed settings applied by vs_image_preprocess() to a fixed 5x3 RGB
 * image.
 *
 * Oracle on success: resample is a Pillow filter (0..5), the target is
 * the model's size, rescale_factor is finite, image_mean / image_std hold
 * finite floats and no zero std when normalizing (what the parser
 * promises: a config must not turn every pixel into inf/NaN), and
 * preprocessing with those settings succeeds.  On failure: a status and a
 * message, *out untouched.  The text is passed without a terminating NUL.
 * Called from one thread.
 */
#include <math.h>

#include "fuzz_util.h"
#include "image/image.h"
#include "model/model_internal.h"

static void check(const uint8_t *data, size_t size, int ih, int iw)
{
    struct vs_preproc p;
    struct vs_err err = { 0 };
    memset(&p, 0xA5, sizeof p);
    enum vs_status s = vs_preproc_parse((const char *)data, size,
                                        "fuzz/preprocessor_config.json", ih, iw, &p, &err);
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_preproc_parse");
        VSF_CHECK(s == VS_BAD_INPUT || s == VS_UNSUPPORTED || s == VS_NOMEM,
                  "unexpected status %s: %s", vs_status_name(s), err.msg);
        VSF_CHECK(vsf_all_bytes(&p, sizeof p, 0xA5), "out written on failure");
        return;
    }
    VSF_CHECK((int)p.resample >= 0 && (int)p.resample <= 5, "resample %d", (int)p.resample);
    VSF_CHECK(p.height == ih && p.width == iw, "size %dx%d for a %dx%d model",
              p.height, p.width, ih, iw);
    VSF_CHECK(isfinite(p.rescale_factor), "rescale_factor %g", p.rescale_factor);
    for (int c = 0; c < 3; c++) {
        VSF_CHECK(isfinite(p.image_mean[c]) && isfinite(p.image_std[c]),
                  "image_mean[%d] = %g, image_std[%d] = %g", c, (double)p.image_mean[c], c,
                  (double)p.image_std[c]);
        VSF_CHECK(!p.do_normalize || p.image_std[c] != 0.0f, "image_std[%d] = 0", c);
    }

    /* rgb: (3, 5, 3) uint8, every value 0..255 seen across channels */
    uint8_t rgb[3 * 5 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 97);
    rgb[0] = 0;
    rgb[1] = 255;
    const struct vs_image img = { .width = 5, .height = 3, .rgb = rgb,
                                  .format = VS_IMAGE_PNG, .mode = "RGB" };
    const int oh = p.do_resize ? p.height : 3, ow = p.do_resize ? p.width : 5;
    float *out = malloc((size_t)3 * (size_t)oh * (size_t)ow * sizeof *out);
    VSF_CHECK(out != NULL, "no memory");
    s = vs_image_preprocess(&img, &p, out, &err);
    VSF_CHECK(s == VS_OK, "a parsed config does not preprocess: %s", err.msg);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, 224, 224);
    check(data, size, 32, 32);
    return 0;
}
