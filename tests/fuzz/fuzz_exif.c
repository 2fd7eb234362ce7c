/* fuzz_exif.c: the EXIF/TIFF parsers of src/image/exif.c on arbitrary
 * bytes taken as an EXIF block: Pillow's header verdict
 * (vs_exif_check_header), the IFD0 orientation (vs_exif_orientation) and
 * the IFD0 entry lookup (vs_tiff_ifd0_find) for a few tags, with and
 * without a leading "Exif\0\0".
 *
 * Oracle: the header verdict is one of the three values; a found entry's
 * value lies entirely inside the block and its byte order flag is 0 or 1.
 * The input is the block itself (seeds: EXIF blocks cut out of the JPEG,
 * PNG and WebP seeds).  Called from one thread.
 */
#include "fuzz_util.h"
#include "image/decoders.h"

static void check_find(const uint8_t *tiff, size_t len, uint32_t tag)
{
    struct vs_tiff_entry e;
    memset(&e, 0, sizeof e);
    if (!vs_tiff_ifd0_find(tiff, len, tag, &e)) return;
    VSF_CHECK(e.big == 0 || e.big == 1, "tag 0x%x: big=%d", tag, e.big);
    VSF_CHECK(e.size == 0 || (e.val >= tiff && e.val <= tiff + len &&
                              e.size <= (size_t)(tiff + len - e.val)),
              "tag 0x%x: value [%p, +%zu) outside the %zu-byte block", tag,
              (const void *)e.val, e.size, len);
    VSF_CHECK(e.count > 0, "tag 0x%x: count 0 kept", tag);
    if (e.size) vsf_sink(vsf_touch(e.val, e.size));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum vs_exif_header h = vs_exif_check_header(data, size);
    VSF_CHECK(h == VS_EXIF_OK || h == VS_EXIF_NOT_TIFF || h == VS_EXIF_SHORT_HEADER,
              "header verdict %d", (int)h);
    vsf_sink((uint64_t)vs_exif_orientation(data, size));

    /* vs_tiff_ifd0_find takes the TIFF structure without the "Exif\0\0"
     * prefix: try the block as is, and past a prefix when there is one. */
    static const uint32_t tags[] = { 0x0112 /* Orientation */, 0x8769 /* Exif IFD */,
                                     0x0110 /* Model */, 0x0000 };
    const uint8_t *t = data;
    size_t n = size;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < VS_ARRAY_LEN(tags); i++) check_find(t, n, tags[i]);
        if (n < 6 || memcmp(t, "Exif\0\0", 6) != 0) break;
        t += 6;
        n -= 6;
    }
    return 0;
}
