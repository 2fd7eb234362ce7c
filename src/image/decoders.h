/* decoders.h: the per-format decoders behind vs_image_decode().  Private to
 * src/image/.
 *
 * Each decoder parses its container, reports the declared canvas size,
 * checks it against limits->max_pixels BEFORE allocating pixels, and
 * produces RGB8 exactly as Pillow 9.4's convert("RGB") would from the mode
 * Pillow opens the file in (alpha dropped, grey replicated, palette
 * expanded, 16-bit and CMYK mapped as Pillow maps them).  It also hands
 * back the raw EXIF block (TIFF header onwards) if the file carries one,
 * and for PNG an XMP orientation, so that decode.c can apply
 * exif_transpose once, in one place.
 */
#ifndef VS_IMAGE_DECODERS_H
#define VS_IMAGE_DECODERS_H

#include "image.h"

struct vs_decoded {
    int width, height;          /* as stored */
    uint8_t *rgb;               /* width*height*3, malloc'd */
    char mode[8];               /* Pillow's mode at open */
    uint8_t *exif;              /* malloc'd copy of the EXIF block ("II*\0"/"MM\0*"...), or NULL */
    size_t exif_len;
    int xmp_orientation;        /* PNG XMP tiff:Orientation, 0 when none */
};

void vs_decoded_deinit(struct vs_decoded *d);

/* Checks w*h against the limit; the message says the declared size and
 * the limit.  Used by every decoder before allocating pixels. */
enum vs_status vs_decode_check_pixels(const char *fmt, uint64_t w, uint64_t h,
                                      const struct vs_image_limits *lim,
                                      struct vs_err *err);

enum vs_status vs_decode_jpeg(const uint8_t *data, size_t len,
                              const struct vs_image_limits *lim,
                              struct vs_decoded *out, struct vs_err *err);
enum vs_status vs_decode_png(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err);
enum vs_status vs_decode_webp(const uint8_t *data, size_t len,
                              const struct vs_image_limits *lim,
                              struct vs_decoded *out, struct vs_err *err);
enum vs_status vs_decode_gif(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err);
enum vs_status vs_decode_bmp(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err);

/* Pillow 9.4's verdict on the TIFF header of an EXIF block (a leading
 * "Exif\0\0" skipped), i.e. what Image.Exif.load raises before any tag is
 * read: VS_EXIF_NOT_TIFF (SyntaxError: no II/MM prefix),
 * VS_EXIF_SHORT_HEADER (struct.error: a TIFF prefix but fewer than 8
 * bytes, or a BigTIFF prefix).  An empty block is VS_EXIF_OK.  decode.c
 * rejects an image whose EXIF exif_transpose would choke on. */
enum vs_exif_header { VS_EXIF_OK = 0, VS_EXIF_NOT_TIFF, VS_EXIF_SHORT_HEADER };
enum vs_exif_header vs_exif_check_header(const uint8_t *exif, size_t len);

/* One IFD0 entry of a classic TIFF block (no "Exif" prefix), as Pillow's
 * ImageFileDirectory_v2.load keeps it: entries of unknown type or count 0
 * skipped, the scan stopped at the first unreadable entry or out-of-line
 * value, a later duplicate replacing an earlier one.  val points into the
 * block (size = count * unit bytes); big = byte order.  Returns 1 when
 * found, else 0 (also for a header Pillow refuses). */
struct vs_tiff_entry {
    uint32_t type, count;
    const uint8_t *val;
    size_t size;
    int big;
};
int vs_tiff_ifd0_find(const uint8_t *tiff, size_t len, uint32_t tag,
                      struct vs_tiff_entry *out);

/* Orientation tag 0x0112 from IFD0 of an EXIF block (TIFF header onwards;
 * a leading "Exif\0\0" is skipped).  0 when absent or unreadable. */
int vs_exif_orientation(const uint8_t *exif, size_t len);

/* Applies PIL.ImageOps.exif_transpose's transform for orientation 2..8 to
 * an RGB8 buffer; returns a new buffer (w/h swapped for 5..8) or NULL on
 * allocation failure.  Orientation 1 or unknown: not called. */
uint8_t *vs_orient_apply(const uint8_t *rgb, int w, int h, int orientation,
                         int *out_w, int *out_h);

#endif
