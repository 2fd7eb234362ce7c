/* sniff.c: decides an image's format from its first bytes, as Pillow 9.4's
 * Image.open does by content (each plugin's _accept()), never from a name.
 *
 *   JPEG  FF D8 FF                                  (JpegImagePlugin)
 *   PNG   89 50 4E 47 0D 0A 1A 0A                   (PngImagePlugin)
 *   WebP  "RIFF" ???? "WEBP" then "VP8 "/"VP8L"/"VP8X" (WebPImagePlugin:
 *         a RIFF/WEBP file with any other first chunk is not identified)
 *   GIF   "GIF87a" / "GIF89a"                       (GifImagePlugin)
 *   BMP   "BM"                                      (BmpImagePlugin; the
 *         header-size checks happen in the decoder)
 * The magic numbers are disjoint, so the order of the tests does not matter.
 * Pure functions; any thread.
 */
#include <string.h>

#include "image.h"

const char *vs_image_format_name(enum vs_image_format f)
{
    switch (f) {
    case VS_IMAGE_JPEG: return "JPEG";
    case VS_IMAGE_PNG:  return "PNG";
    case VS_IMAGE_WEBP: return "WEBP";
    case VS_IMAGE_GIF:  return "GIF";
    case VS_IMAGE_BMP:  return "BMP";
    case VS_IMAGE_UNKNOWN: break;
    }
    return "unknown";
}

/* True when data[0..len) starts with the n bytes of magic. */
static int starts(const uint8_t *data, size_t len, const char *magic, size_t n)
{
    return len >= n && memcmp(data, magic, n) == 0;
}

enum vs_image_format vs_image_sniff(const uint8_t *data, size_t len)
{
    if (!data) return VS_IMAGE_UNKNOWN;
    if (starts(data, len, "\xFF\xD8\xFF", 3)) return VS_IMAGE_JPEG;
    if (starts(data, len, "\x89PNG\r\n\x1A\n", 8)) return VS_IMAGE_PNG;
    if (starts(data, len, "GIF87a", 6) || starts(data, len, "GIF89a", 6))
        return VS_IMAGE_GIF;
    if (starts(data, len, "BM", 2)) return VS_IMAGE_BMP;
    /* RIFF <u32 size> WEBP <first chunk fourcc>: bytes 0-3, 8-11, 12-15. */
    if (len >= 16 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0 &&
        (memcmp(data + 12, "VP8 ", 4) == 0 || memcmp(data + 12, "VP8L", 4) == 0 ||
         memcmp(data + 12, "VP8X", 4) == 0))
        return VS_IMAGE_WEBP;
    return VS_IMAGE_UNKNOWN;
}
