/* exif.c: the EXIF orientation tag and PIL.ImageOps.exif_transpose.
 *
 * vs_exif_orientation() reads tag 0x0112 from IFD0 of a TIFF-structured
 * EXIF block the way Pillow 9.4's Exif.load / ImageFileDirectory_v2.load
 * does, so that corrupt blocks give Pillow's answer:
 *   - a leading "Exif\0\0" is skipped; the header must be "II*\0",
 *     "MM\0*" (or Pillow's two extra prefixes "MM*\0", "II\0*"); the byte
 *     order comes from the first two bytes;
 *   - IFD0 is at the u32 offset in bytes 4..7, counted from the header;
 *   - entries are read in order; an entry that cannot be read in full, or
 *     whose out-of-line value lies (partly) outside the block, ends the
 *     scan but keeps what was read before it (Pillow warns "Corrupt EXIF"
 *     and keeps going with those tags); entries of an unknown type or with
 *     count 0 are skipped; a later duplicate tag replaces an earlier one;
 *   - the orientation is the first value of the tag's array (Pillow keeps
 *     element 0 of a too-long array) for the numeric TIFF types Pillow
 *     turns into numbers (SHORT, LONG, signed ones, LONG8, IFD, rationals,
 *     FLOAT, DOUBLE); a rational or float counts only when it is a whole
 *     number (Python's dict lookup: 6.0 == 6); BYTE, ASCII and UNDEFINED
 *     values come out of Pillow as bytes/str and never match.
 * Every read is bounds-checked against len; offsets are 64-bit.
 *
 * vs_orient_apply() performs the transpose for orientations 2..8 as one
 * affine walk over the source: output pixel (x, y) reads source pixel
 * p0 + x*step_x + y*step_y (byte offsets), with (step_x, step_y) chosen per
 * transform.  Pure functions; any thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decoders.h"

/* A bounded view of the TIFF block with its byte order. */
struct tiff {
    const uint8_t *p;
    size_t len;
    int big;   /* 1 = "MM" (big endian), 0 = "II" */
};

static uint32_t rd16(const struct tiff *t, const uint8_t *q)
{
    return t->big ? (uint32_t)q[0] << 8 | q[1] : (uint32_t)q[1] << 8 | q[0];
}

static uint32_t rd32(const struct tiff *t, const uint8_t *q)
{
    return t->big ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3]
                  : (uint32_t)q[3] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[1] << 8 | q[0];
}

static uint64_t rd64(const struct tiff *t, const uint8_t *q)
{
    uint64_t a = rd32(t, q), b = rd32(t, q + 4);
    return t->big ? a << 32 | b : b << 32 | a;
}

/* Size in bytes of one value of TIFF type `type`, 0 for a type Pillow 9.4
 * does not load (the entry is then skipped). */
static unsigned type_size(uint32_t type)
{
    switch (type) {
    case 1: case 2: case 6: case 7: return 1;      /* BYTE ASCII SBYTE UNDEFINED */
    case 3: case 8: return 2;                      /* SHORT SSHORT */
    case 4: case 9: case 11: case 13: return 4;    /* LONG SLONG FLOAT IFD */
    case 5: case 10: case 12: case 16: return 8;   /* RATIONAL SRATIONAL DOUBLE LONG8 */
    default: return 0;
    }
}

/* The first value at q of type `type` as an orientation: the integer when
 * it is a whole number that fits in an int, else 0 ("leave as is"). */
static int first_value(const struct tiff *t, uint32_t type, const uint8_t *q)
{
    double v;
    switch (type) {
    case 6: return (int8_t)q[0];
    case 3: return (int)rd16(t, q);
    case 8: return (int16_t)rd16(t, q);
    case 4: case 13: v = rd32(t, q); break;
    case 9: return (int32_t)rd32(t, q);
    case 16: v = (double)rd64(t, q); break;
    case 5: case 10: {
        uint32_t n = rd32(t, q), d = rd32(t, q + 4);
        if (d == 0) return 0;
        v = type == 5 ? (double)n / d : (double)(int32_t)n / (int32_t)d;
        break;
    }
    case 11: {
        uint32_t u = rd32(t, q);
        float f;
        memcpy(&f, &u, sizeof f);
        v = f;
        break;
    }
    case 12: {
        uint64_t u = rd64(t, q);
        memcpy(&v, &u, sizeof v);
        break;
    }
    default: return 0;   /* BYTE, ASCII, UNDEFINED: bytes/str, never an orientation */
    }
    if (!(v == floor(v)) || v < -2147483648.0 || v > 2147483647.0) return 0;
    return (int)v;
}

/* Strips one leading "Exif\0\0" as Exif.load does. */
static void skip_exif_prefix(const uint8_t **exif, size_t *len)
{
    if (*len >= 6 && memcmp(*exif, "Exif\0\0", 6) == 0) {
        *exif += 6;
        *len -= 6;
    }
}

enum vs_exif_header vs_exif_check_header(const uint8_t *exif, size_t len)
{
    if (!exif) return VS_EXIF_OK;
    skip_exif_prefix(&exif, &len);
    if (len == 0) return VS_EXIF_OK;   /* Pillow: empty -> no tags, no error */
    /* TiffImagePlugin.PREFIXES: classic (incl. the two "invalid" byte
     * orders Pillow tolerates) and BigTIFF, whose 16-byte header never fits
     * the 8 bytes Exif.load reads -> struct.error. */
    if (len < 4) return VS_EXIF_NOT_TIFF;
    if (memcmp(exif, "MM\0+", 4) == 0 || memcmp(exif, "II+\0", 4) == 0)
        return VS_EXIF_SHORT_HEADER;
    if (memcmp(exif, "II*\0", 4) != 0 && memcmp(exif, "II\0*", 4) != 0 &&
        memcmp(exif, "MM\0*", 4) != 0 && memcmp(exif, "MM*\0", 4) != 0)
        return VS_EXIF_NOT_TIFF;
    return len < 8 ? VS_EXIF_SHORT_HEADER : VS_EXIF_OK;
}

int vs_tiff_ifd0_find(const uint8_t *tiff, size_t len, uint32_t want,
                      struct vs_tiff_entry *out)
{
    /* Classic TIFF header only: "II*\0" / "II\0*" little, "MM\0*" /
     * "MM*\0" big endian, IFD0 offset in bytes 4..7. */
    if (!tiff || len < 8 || vs_exif_check_header(tiff, len) != VS_EXIF_OK ||
        memcmp(tiff, "Exif\0\0", 6) == 0)
        return 0;
    struct tiff t = {tiff, len, tiff[0] == 'M'};
    uint64_t ifd = rd32(&t, tiff + 4);
    if (ifd + 2 > len) return 0;                  /* tag count unreadable */
    uint32_t n = rd16(&t, tiff + ifd);
    uint64_t pos = ifd + 2;
    int found = 0;
    for (uint32_t i = 0; i < n; i++, pos += 12) {
        if (pos + 12 > len) break;                 /* entry cut short: stop */
        const uint8_t *e = tiff + pos;
        uint32_t tag = rd16(&t, e), type = rd16(&t, e + 2), count = rd32(&t, e + 4);
        unsigned usz = type_size(type);
        if (usz == 0) continue;                    /* unknown type: skipped */
        uint64_t size = (uint64_t)count * usz;
        if (size == 0) continue;                   /* no data: skipped */
        const uint8_t *val = e + 8;
        if (size > 4) {
            uint64_t off = rd32(&t, e + 8);
            if (off + size > len) break;           /* "Truncated File Read": stop */
            val = tiff + off;
        }
        if (tag == want) {                         /* a later duplicate replaces */
            out->type = type;
            out->count = count;
            out->val = val;
            out->size = (size_t)size;
            out->big = t.big;
            found = 1;
        }
    }
    return found;
}

int vs_exif_orientation(const uint8_t *exif, size_t len)
{
    if (!exif) return 0;
    skip_exif_prefix(&exif, &len);
    struct vs_tiff_entry e;
    if (!vs_tiff_ifd0_find(exif, len, 0x0112, &e)) return 0;
    struct tiff t = {exif, len, e.big};
    return first_value(&t, e.type, e.val);
}

uint8_t *vs_orient_apply(const uint8_t *rgb, int w, int h, int orientation,
                         int *out_w, int *out_h)
{
    if (!rgb || w <= 0 || h <= 0 || orientation < 2 || orientation > 8) return NULL;
    /* Source pixel (sx, sy) is at byte (sy*w + sx)*3.  For each transform,
     * output (x, y) reads source (sx, sy) as follows (ow x oh output):
     *   2 FLIP_LEFT_RIGHT  w x h  (w-1-x, y)
     *   3 ROTATE_180       w x h  (w-1-x, h-1-y)
     *   4 FLIP_TOP_BOTTOM  w x h  (x, h-1-y)
     *   5 TRANSPOSE        h x w  (y, x)
     *   6 ROTATE_270 (cw)  h x w  (y, h-1-x)
     *   7 TRANSVERSE       h x w  (w-1-y, h-1-x)
     *   8 ROTATE_90 (ccw)  h x w  (w-1-y, x)
     * p0 = byte offset of output (0,0); sx_ = offset step per output x,
     * sy_ = per output y. */
    const ptrdiff_t px = 3, row = (ptrdiff_t)w * 3;
    ptrdiff_t p0, sx_, sy_;
    int ow = w, oh = h;
    switch (orientation) {
    case 2: p0 = (w - 1) * px;               sx_ = -px;  sy_ = row;  break;
    case 3: p0 = (h - 1) * row + (w - 1) * px; sx_ = -px; sy_ = -row; break;
    case 4: p0 = (h - 1) * row;              sx_ = px;   sy_ = -row; break;
    case 5: p0 = 0;                          sx_ = row;  sy_ = px;   break;
    case 6: p0 = (h - 1) * row;              sx_ = -row; sy_ = px;   break;
    case 7: p0 = (h - 1) * row + (w - 1) * px; sx_ = -row; sy_ = -px; break;
    default: p0 = (w - 1) * px;              sx_ = row;  sy_ = -px;  break;   /* 8 */
    }
    if (orientation >= 5) { ow = h; oh = w; }
    size_t n;
    if (!vs_mul_size((size_t)w * 3, (size_t)h, &n)) return NULL;
    uint8_t *out = malloc(n ? n : 1);
    if (!out) return NULL;
    if (orientation == 4) {   /* FLIP_TOP_BOTTOM: whole rows */
        for (int y = 0; y < oh; y++)
            memcpy(out + (size_t)y * (size_t)row, rgb + (size_t)(h - 1 - y) * (size_t)row,
                   (size_t)row);
        *out_w = ow;
        *out_h = oh;
        return out;
    }
    /* Walk the output in T x T tiles: for the transposing orientations
     * (5..8) a whole output row reads a source column, so untiled the
     * source would be streamed through the cache once per output row. */
    enum { T = 64 };
    const ptrdiff_t orow = (ptrdiff_t)ow * 3;
    for (int ty = 0; ty < oh; ty += T) {
        int ye = ty + T < oh ? ty + T : oh;
        for (int tx = 0; tx < ow; tx += T) {
            int xe = tx + T < ow ? tx + T : ow;
            for (int y = ty; y < ye; y++) {
                const uint8_t *restrict s = rgb + p0 + (ptrdiff_t)y * sy_ + (ptrdiff_t)tx * sx_;
                uint8_t *restrict o = out + (ptrdiff_t)y * orow + (ptrdiff_t)tx * 3;
                for (int x = tx; x < xe; x++, s += sx_, o += 3) {
                    o[0] = s[0];
                    o[1] = s[1];
                    o[2] = s[2];
                }
            }
        }
    }
    *out_w = ow;
    *out_h = oh;
    return out;
}
