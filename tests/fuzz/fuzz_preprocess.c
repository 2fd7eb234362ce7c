/* fuzz_preprocess.c: decode then vs_image_preprocess(), the path every
 * request takes before the model.
 *
 * Input layout: byte 0 chooses the second preprocessing run (bits 0-2:
 * Pillow filter number 0..7, so 6 and 7 are invalid filters that must be
 * refused; bits 3-5: a target size from sizes[]; bit 6: do_resize off;
 * bit 7: rescale/normalize off); bytes 1.. are the image, decoded with a
 * 1 Mpx limit.  Every decodable image is first preprocessed with the
 * fixed ViT default (224x224 bilinear, rescale 1/255, mean = std = 0.5).
 *
 * Oracle: each run succeeds (a decoded image and a valid filter must
 * always preprocess), or fails with a message for an invalid filter only;
 * the output buffer — allocated at its exact size, so ASan sees overruns
 * — holds finite values, within [-1, 1] for the default normalisation.
 * Called from one thread.
 */
#include <math.h>

#include "fuzz_util.h"
#include "image/image.h"

#define VSF_MAX_PIXELS (1u << 20)

static const int sizes[8][2] = {   /* {height, width} */
    { 224, 224 }, { 1, 1 }, { 7, 300 }, { 300, 7 }, { 384, 384 }, { 2, 3 }, { 32, 32 }, { 97, 61 },
};

static void vit_default(struct vs_preproc *p)
{
    memset(p, 0, sizeof *p);
    p->do_resize = true;
    p->height = p->width = 224;
    p->resample = VS_RESAMPLE_BILINEAR;
    p->do_rescale = true;
    p->rescale_factor = 1.0 / 255.0;
    p->do_normalize = true;
    for (int c = 0; c < 3; c++) p->image_mean[c] = p->image_std[c] = 0.5f;
    p->do_convert_rgb = true;
}

/* Runs p on img; checks the status and the values. */
static void run(const struct vs_image *img, const struct vs_preproc *p, float lo, float hi)
{
    const int h = p->do_resize ? p->height : img->height;
    const int w = p->do_resize ? p->width : img->width;
    const size_t n = (size_t)3 * (size_t)h * (size_t)w;
    float *out = malloc(n * sizeof *out);
    VSF_CHECK(out != NULL, "no memory for %zu floats", n);
    struct vs_err err = { 0 };
    enum vs_status st = vs_image_preprocess(img, p, out, &err);
    const bool valid_filter = (int)p->resample >= 0 && (int)p->resample <= 5;
    if (st != VS_OK) {
        vsf_check_failure(st, &err, "vs_image_preprocess");
        VSF_CHECK(p->do_resize && !valid_filter, "%dx%d -> %dx%d filter %d failed: %s",
                  img->width, img->height, w, h, (int)p->resample, err.msg);
        free(out);
        return;
    }
    VSF_CHECK(valid_filter || !p->do_resize, "invalid filter %d accepted", (int)p->resample);
    for (size_t i = 0; i < n; i++)
        VSF_CHECK(isfinite(out[i]) && out[i] >= lo && out[i] <= hi,
                  "out[%zu] = %g outside [%g, %g]", i, (double)out[i], (double)lo, (double)hi);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t sel = data[0];
    const struct vs_image_limits lim = { .max_pixels = VSF_MAX_PIXELS };
    struct vs_image img;
    struct vs_err err = { 0 };
    if (vs_image_decode(data + 1, size - 1, &lim, &img, &err) != VS_OK) return 0;

    struct vs_preproc p;
    vit_default(&p);
    run(&img, &p, -1.0f, 1.0f);

    p.resample = (enum vs_resample)(sel & 7);
    p.height = sizes[(sel >> 3) & 7][0];
    p.width = sizes[(sel >> 3) & 7][1];
    p.do_resize = !(sel & 0x40);
    if (sel & 0x80) {
        p.do_rescale = p.do_normalize = false;
        run(&img, &p, 0.0f, 255.0f);
    } else {
        run(&img, &p, -1.0f, 1.0f);
    }
    vs_image_deinit(&img);
    return 0;
}
