/* preprocess.c: ViTImageProcessor (transformers 4.33, Pillow backend) on an
 * RGB8 image, into a caller-owned float[3][H][W] buffer.
 *
 * The steps and their exact arithmetic (see shared/fixtures/hf-reference/
 * README.md, "What the reference computes", steps 4-7):
 *   1. resize (do_resize): Pillow's Image.resize((W, H), resample) on the
 *      uint8 image (vs_image_resize, bit-exact);
 *   2. rescale (do_rescale): x = float32(u8 * rescale_factor), the product
 *      taken in double (numpy: uint8 array * Python float -> float64) and
 *      rounded once to float32 (.astype(float32));
 *   3. normalize (do_normalize): y = (x - mean_f32) / std_f32 in float32,
 *      a true division (numpy divides; x * (1/std) differs for some std);
 *   4. HWC -> CHW, channels R, G, B.
 * Every step maps one uint8 value of one channel to one float, so steps 2-3
 * are precomputed as a 256-entry table per channel and the pixel loop is a
 * lookup: the table holds exactly the floats the formula gives.
 *
 * Height-1 and height-3 images are processed as the ordinary RGB images
 * they are (the fixtures' channels_last_variant), not with HF's
 * channel-axis guess.
 *
 * Threads: reentrant, no global state; called from request worker threads.
 */
#include <stdlib.h>
#include <string.h>

#include "image.h"

/* lut (3, 256): value v of channel c -> the float ViTImageProcessor gives. */
static void build_lut(const struct vs_preproc *p, float lut[3][256])
{
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            /* rescale in double, round once to float */
            float x = p->do_rescale ? (float)((double)v * p->rescale_factor) : (float)v;
            if (p->do_normalize) {
                /* float32 subtraction, then float32 division (x86-64 SSE
                 * evaluates float ops in float: FLT_EVAL_METHOD == 0) */
                float d = x - p->image_mean[c];
                x = d / p->image_std[c];
            }
            lut[c][v] = x;
        }
    }
}

enum vs_status vs_image_preprocess(const struct vs_image *img,
                                   const struct vs_preproc *p,
                                   float *out, struct vs_err *err)
{
    VS_ASSERT(img && p && out);
    if (!img->rgb || img->width <= 0 || img->height <= 0)
        return vs_err_set(err, VS_BAD_INPUT, "preprocess: empty image (%dx%d)",
                          img->width, img->height);
    const int w = p->do_resize ? p->width : img->width;
    const int h = p->do_resize ? p->height : img->height;
    if (w <= 0 || h <= 0)
        return vs_err_set(err, VS_BAD_INPUT, "preprocess: bad target size %dx%d "
                          "(preprocessor size.width/height)", w, h);
    size_t plane, bytes;
    if (!vs_mul_size((size_t)w, (size_t)h, &plane) || !vs_mul_size(plane, 3, &bytes))
        return vs_err_set(err, VS_TOO_LARGE, "preprocess: target %dx%d too large", w, h);

    /* rgb: (h, w, 3) uint8.  Resizing to the same size is a copy, but it
     * still goes through vs_image_resize so that a bad filter number is
     * refused as Pillow refuses it. */
    const uint8_t *rgb = img->rgb;
    uint8_t *resized = NULL;
    if (p->do_resize) {
        resized = malloc(bytes);
        if (!resized)
            return vs_err_set(err, VS_NOMEM, "preprocess: no memory for a %dx%d image", w, h);
        enum vs_status st = vs_image_resize(img->rgb, img->width, img->height,
                                            resized, w, h, p->resample, err);
        if (st != VS_OK) {
            free(resized);
            vs_err_prefix(err, "preprocess");
            return st;
        }
        rgb = resized;
    }

    float lut[3][256];
    build_lut(p, lut);
    /* out (3, h, w) <- lut[c][rgb (h, w, 3)] */
    float *r = out, *g = out + plane, *b = out + 2 * plane;
    for (size_t i = 0; i < plane; i++) {
        r[i] = lut[0][rgb[3 * i + 0]];
        g[i] = lut[1][rgb[3 * i + 1]];
        b[i] = lut[2][rgb[3 * i + 2]];
    }
    free(resized);
    return VS_OK;
}
