/* fuzz_decoder.c: one per-format decoder of src/image/decoders.h, called
 * directly, without the sniffer in front (so a decoder also meets bytes
 * that are not its format at all, and mutations of the magic number).
 * Built once per format: VSF_DECODER names the function (vs_decode_png,
 * ...), VSF_FORMAT its label; tests/fuzz/CMakeLists.txt makes the
 * fuzz_decode_<fmt> targets.
 *
 * Oracle: a failure has a status and a message; a success has a non-empty
 * canvas within the (lowered, 4 Mpx) limit, width*height*3 readable pixel
 * bytes, a NUL-terminated non-empty mode, and an EXIF block (when
 * present) whose exif_len bytes are all readable.  The EXIF block then
 * goes through the orientation parser as decode.c would.
 * Called from one thread.
 */
#include "fuzz_util.h"
#include "image/decoders.h"

#ifndef VSF_DECODER
#error "VSF_DECODER (e.g. vs_decode_png) must be defined"
#endif
#define VSF_STR2(x) #x
#define VSF_STR(x) VSF_STR2(x)
#define VSF_MAX_PIXELS (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct vs_image_limits lim = { .max_pixels = VSF_MAX_PIXELS };
    struct vs_decoded d;
    struct vs_err err = { 0 };
    memset(&d, 0, sizeof d);

    enum vs_status st = VSF_DECODER(data, size, &lim, &d, &err);
    if (st != VS_OK) {
        vsf_check_failure(st, &err, VSF_STR(VSF_DECODER));
        vs_decoded_deinit(&d);   /* a decoder must not leave anything owned */
        return 0;
    }
    VSF_CHECK(d.width > 0 && d.height > 0, "empty canvas %dx%d", d.width, d.height);
    VSF_CHECK((uint64_t)d.width * (uint64_t)d.height <= VSF_MAX_PIXELS,
              "%dx%d exceeds the limit", d.width, d.height);
    VSF_CHECK(d.rgb != NULL, "no pixels");
    VSF_CHECK(memchr(d.mode, '\0', sizeof d.mode) && d.mode[0], "bad mode");
    vsf_sink(vsf_touch(d.rgb, (size_t)d.width * (size_t)d.height * 3));
    if (d.exif) {
        vsf_sink(vsf_touch(d.exif, d.exif_len));
        /* any value: a LONG tag may hold anything, and Pillow, like
         * decode.c, transposes only for 2..8 */
        vsf_sink((uint64_t)vs_exif_orientation(d.exif, d.exif_len));
    }
    vs_decoded_deinit(&d);
    return 0;
}
