/* decode.c: vs_image_decode(), the one entry point from bytes to Pillow's
 * RGB pixels:  sniff -> per-format decoder -> EXIF orientation -> image.
 *
 * This mirrors the HF pipeline on Pillow 9.4:
 *     Image.open(bytes) -> ImageOps.exif_transpose -> convert("RGB")
 * The decoders (decode_<fmt>.c, seam in decoders.h) produce RGB8 as stored
 * and hand back the raw EXIF block; the orientation is applied here, once:
 * tag 0x0112 of IFD0 when the EXIF block has that entry (whatever its
 * value), else (PNG only, filled by the PNG decoder) the XMP
 * tiff:Orientation.  Values 2..8 transpose;
 * anything else leaves the image as stored.
 *
 * Invariants: *out is written only on success; every failure leaves a
 * message in err; the pixel limit (limits->max_pixels, 0 = Pillow's
 * MAX_IMAGE_PIXELS) is checked by each decoder from the declared size
 * before it allocates pixels.  Reentrant, no global state: any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "decoders.h"

void vs_decoded_deinit(struct vs_decoded *d)
{
    if (!d) return;
    free(d->rgb);
    free(d->exif);
    d->rgb = NULL;
    d->exif = NULL;
    d->exif_len = 0;
}

void vs_image_deinit(struct vs_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
}

enum vs_status vs_decode_check_pixels(const char *fmt, uint64_t w, uint64_t h,
                                      const struct vs_image_limits *lim,
                                      struct vs_err *err)
{
    uint64_t max = (lim && lim->max_pixels) ? lim->max_pixels : VS_IMAGE_DEFAULT_MAX_PIXELS;
    /* w*h without overflow: w > max/h already means w*h > max. */
    if (w != 0 && h != 0 && (w > max / h || w * h > max))
        return vs_err_set(err, VS_TOO_LARGE,
                          "%s: declared image size %llux%llu exceeds the limit of %llu pixels",
                          fmt ? fmt : "image", (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)max);
    return VS_OK;
}

enum vs_status vs_image_decode(const uint8_t *data, size_t len,
                               const struct vs_image_limits *limits,
                               struct vs_image *out, struct vs_err *err)
{
    VS_ASSERT(out != NULL);
    struct vs_image_limits lim = {VS_IMAGE_DEFAULT_MAX_PIXELS};
    if (limits && limits->max_pixels) lim.max_pixels = limits->max_pixels;
    if (!data) len = 0;

    enum vs_image_format fmt = vs_image_sniff(data, len);
    struct vs_decoded d;
    memset(&d, 0, sizeof d);
    enum vs_status st;
    switch (fmt) {
    case VS_IMAGE_JPEG: st = vs_decode_jpeg(data, len, &lim, &d, err); break;
    case VS_IMAGE_PNG:  st = vs_decode_png(data, len, &lim, &d, err); break;
    case VS_IMAGE_WEBP: st = vs_decode_webp(data, len, &lim, &d, err); break;
    case VS_IMAGE_GIF:  st = vs_decode_gif(data, len, &lim, &d, err); break;
    case VS_IMAGE_BMP:  st = vs_decode_bmp(data, len, &lim, &d, err); break;
    default:
        return vs_err_set(err, VS_UNSUPPORTED,
                          len == 0 ? "empty input: unrecognized image format"
                                   : "unrecognized image format (not JPEG, PNG, WebP, GIF or BMP)");
    }
    if (st != VS_OK) {
        vs_decoded_deinit(&d);
        if (err && err->msg[0] == '\0')
            vs_err_set(err, st, "%s: %s", vs_image_format_name(fmt), vs_status_str(st));
        return st;
    }
    VS_ASSERT(d.rgb != NULL && d.width > 0 && d.height > 0);

    /* exif_transpose first loads the EXIF block: a header Pillow cannot
     * parse raises there (SyntaxError / struct.error) and the pipeline
     * fails, whatever the pixels. */
    if (d.exif && vs_exif_check_header(d.exif, d.exif_len) != VS_EXIF_OK) {
        enum vs_exif_header hv = vs_exif_check_header(d.exif, d.exif_len);
        vs_decoded_deinit(&d);
        return vs_err_set(err, VS_BAD_INPUT, "%s: EXIF block %s", vs_image_format_name(fmt),
                          hv == VS_EXIF_NOT_TIFF ? "is not a TIFF structure"
                                                 : "has a truncated or BigTIFF header");
    }
    /* exif_transpose: EXIF IFD0 orientation first; XMP only when IFD0 has
     * none (Pillow 9.4 consults XMP only in that case). */
    int orientation = 0, has_tag = 0;
    if (d.exif) {
        const uint8_t *tiff = d.exif;
        size_t tlen = d.exif_len;
        if (tlen >= 6 && memcmp(tiff, "Exif\0\0", 6) == 0) {
            tiff += 6;
            tlen -= 6;
        }
        struct vs_tiff_entry te;
        has_tag = vs_tiff_ifd0_find(tiff, tlen, 0x0112, &te);   /* "0x0112 in exif" */
        orientation = vs_exif_orientation(d.exif, d.exif_len);
    }
    if (!has_tag) orientation = d.xmp_orientation;
    int w = d.width, h = d.height;
    uint8_t *rgb = d.rgb;
    if (orientation >= 2 && orientation <= 8) {
        rgb = vs_orient_apply(d.rgb, d.width, d.height, orientation, &w, &h);
        if (!rgb) {
            vs_decoded_deinit(&d);
            return vs_err_set(err, VS_NOMEM, "%s: out of memory applying EXIF orientation %d",
                              vs_image_format_name(fmt), orientation);
        }
        free(d.rgb);
    }
    d.rgb = NULL;

    memset(out, 0, sizeof *out);
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    out->format = fmt;
    memcpy(out->mode, d.mode, sizeof out->mode);
    out->mode[sizeof out->mode - 1] = '\0';
    out->orientation = (orientation >= 1 && orientation <= 8) ? orientation : 0;
    out->stored_width = d.width;
    out->stored_height = d.height;
    vs_decoded_deinit(&d);
    return VS_OK;
}
