/* image.h: the door of the image module — bytes in, Pillow's pixels out.
 *
 * vs_image_decode() reproduces what the Hugging Face pipeline does with
 * Pillow 9.4 (Debian 12):
 *     PIL.Image.open(bytes) -> ImageOps.exif_transpose -> convert("RGB")
 * The format is decided from the bytes, never from a name.  The declared
 * pixel count is checked against the limit before any pixel buffer is
 * allocated.  Anything Pillow rejects is rejected with a message naming the
 * problem (VS_BAD_INPUT for corrupt/truncated data, VS_UNSUPPORTED for a
 * format outside JPEG/PNG/WebP/GIF/BMP, VS_TOO_LARGE over the pixel limit).
 *
 * vs_image_preprocess() then does what ViTImageProcessor does: resize with
 * Pillow's resampler (bit-exact, 8-bit fixed point), rescale, normalize,
 * into a caller-owned float[3][H][W] buffer.
 *
 * Threads: every function is reentrant; no global state.
 */
#ifndef VS_IMAGE_IMAGE_H
#define VS_IMAGE_IMAGE_H

#include <stdint.h>
#include <stddef.h>

#include "../common/vs.h"
#include "../common/preproc.h"

enum vs_image_format {
    VS_IMAGE_UNKNOWN = 0,
    VS_IMAGE_JPEG,
    VS_IMAGE_PNG,
    VS_IMAGE_WEBP,
    VS_IMAGE_GIF,
    VS_IMAGE_BMP,
};

/* Pillow's img.format for a format ("JPEG", "PNG", "WEBP", "GIF", "BMP");
 * "unknown" for VS_IMAGE_UNKNOWN. */
const char *vs_image_format_name(enum vs_image_format f);

/* Decides the format from the first bytes (magic numbers), as Pillow's
 * Image.open does by content.  VS_IMAGE_UNKNOWN if none matches. */
enum vs_image_format vs_image_sniff(const uint8_t *data, size_t len);

/* Pillow's Image.MAX_IMAGE_PIXELS (1024*1024*1024/4/3): the default limit. */
#define VS_IMAGE_DEFAULT_MAX_PIXELS 89478485ull

struct vs_image_limits {
    uint64_t max_pixels;   /* declared width*height above this -> VS_TOO_LARGE; 0 = default */
};

/* A decoded image: RGB8, row-major, no padding, after EXIF orientation. */
struct vs_image {
    int width, height;              /* after orientation */
    uint8_t *rgb;                   /* width*height*3 bytes, owned (free with deinit) */
    enum vs_image_format format;
    char mode[8];                   /* Pillow mode at open: "RGB","L","P","RGBA","LA","I","1","CMYK",... */
    int orientation;                /* EXIF orientation seen (1..8), 0 when none */
    int stored_width, stored_height;/* size before orientation */
};

/* Decodes bytes into *out (written only on success; deinit it after). */
enum vs_status vs_image_decode(const uint8_t *data, size_t len,
                               const struct vs_image_limits *limits,
                               struct vs_image *out, struct vs_err *err);

/* Frees the pixels; safe on a zeroed struct and twice in a row. */
void vs_image_deinit(struct vs_image *img);

/* Pillow's Image.resize(size, filter) for an RGB8 image, bit-exact with
 * Pillow 9.4 (src/libImaging/Resample.c): separable, antialiased when
 * shrinking, 8-bit fixed-point coefficients.  dst holds dw*dh*3 bytes.
 * A source already of the target size is copied unchanged. */
enum vs_status vs_image_resize(const uint8_t *src, int sw, int sh,
                               uint8_t *dst, int dw, int dh,
                               enum vs_resample filter, struct vs_err *err);

/* ViTImageProcessor on an RGB8 image: resize (if do_resize) to
 * p->height x p->width, rescale (u8 * factor computed in double, rounded
 * once to float), normalize ((x - mean) / std in float), channels first.
 * out holds 3 * H * W floats where H, W are the resize target (or the
 * image's own size when !do_resize). */
enum vs_status vs_image_preprocess(const struct vs_image *img,
                                   const struct vs_preproc *p,
                                   float *out, struct vs_err *err);

#endif
