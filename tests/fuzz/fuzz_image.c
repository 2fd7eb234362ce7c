/* fuzz_image.c: vs_image_decode() on arbitrary bytes — every format
 * through the sniffer, the per-format decoder, EXIF orientation and the
 * final RGB8 image.
 *
 * Oracle beyond "no crash, no leak, no UB": a failure is BAD_INPUT,
 * UNSUPPORTED or TOO_LARGE with a message and leaves *out untouched; a
 * success gives a non-empty image within the pixel limit, of the sniffed
 * format, whose stored size is the oriented size (swapped for EXIF
 * orientations 5..8), with every one of its width*height*3 bytes readable.
 * The pixel limit is lowered to 4 Mpx so that declared-huge inputs stay
 * cheap (the limit check itself is what is under test there).
 * Called from one thread (libFuzzer or replay_main.c).
 */
#include "fuzz_util.h"
#include "image/image.h"

#define VSF_MAX_PIXELS (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct vs_image_limits lim = { .max_pixels = VSF_MAX_PIXELS };
    struct vs_image img;
    struct vs_err err = { 0 };
    memset(&img, 0xA5, sizeof img);

    enum vs_status st = vs_image_decode(data, size, &lim, &img, &err);
    if (st != VS_OK) {
        vsf_check_failure(st, &err, "vs_image_decode");
        VSF_CHECK(st == VS_BAD_INPUT || st == VS_UNSUPPORTED || st == VS_TOO_LARGE ||
                  st == VS_NOMEM, "unexpected status %s: %s", vs_status_name(st), err.msg);
        VSF_CHECK(vsf_all_bytes(&img, sizeof img, 0xA5), "out written on failure (%s)", err.msg);
        return 0;
    }

    VSF_CHECK(img.width > 0 && img.height > 0, "empty image %dx%d", img.width, img.height);
    VSF_CHECK((uint64_t)img.width * (uint64_t)img.height <= VSF_MAX_PIXELS,
              "%dx%d exceeds the %u pixel limit", img.width, img.height, VSF_MAX_PIXELS);
    VSF_CHECK(img.rgb != NULL, "no pixels");
    VSF_CHECK(img.format != VS_IMAGE_UNKNOWN && img.format == vs_image_sniff(data, size),
              "format %s but sniffed %s", vs_image_format_name(img.format),
              vs_image_format_name(vs_image_sniff(data, size)));
    VSF_CHECK(memchr(img.mode, '\0', sizeof img.mode) && img.mode[0], "bad mode");
    if (img.orientation >= 5 && img.orientation <= 8)
        VSF_CHECK(img.stored_width == img.height && img.stored_height == img.width,
                  "orientation %d: stored %dx%d, image %dx%d", img.orientation,
                  img.stored_width, img.stored_height, img.width, img.height);
    else
        VSF_CHECK(img.stored_width == img.width && img.stored_height == img.height,
                  "orientation %d: stored %dx%d, image %dx%d", img.orientation,
                  img.stored_width, img.stored_height, img.width, img.height);
    vsf_sink(vsf_touch(img.rgb, (size_t)img.width * (size_t)img.height * 3));

    vs_image_deinit(&img);
    vs_image_deinit(&img);      /* documented safe twice in a row */
    return 0;
}
