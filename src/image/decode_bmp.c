/* decode_bmp.c: Windows BMP to RGB8, as Pillow 9.4's BmpImagePlugin reads it.
 *
 * Pillow's reader is not a general BMP reader, and the server must give its
 * verdicts, so this file follows it step by step:
 *   - "BM" + 14-byte file header, then an info header of 12 (OS/2 v1),
 *     40, 64, 108 or 124 bytes; every other size is refused.
 *   - bit depths 1, 4, 8 (palette), 16 (5-5-5), 24, 32 (4th byte ignored);
 *     BI_BITFIELDS only with the masks Pillow knows (5-5-5, 5-6-5, 8-8-8,
 *     and the five 32-bit layouts); BI_RLE8/BI_RLE4 through a port of
 *     Pillow's Python BmpRleDecoder (its quirks included: a delta reads
 *     four bytes, an odd RLE4 absolute run drops its last nibble, padding
 *     follows the absolute file offset); anything else is refused.
 *   - a palette whose entries i are all (i,i,i) makes the image "L" (or
 *     "1" for two entries 0/255); otherwise "P" with a 256-entry palette
 *     whose missing entries are Pillow's grey ramp (index i -> (i,i,i));
 *     more than 256 entries fails like Pillow's putpalette.
 *   - raw pixel rows need stride*(h-1) + the bytes of one row after the
 *     pixel offset; fewer bytes is Pillow's "image file is truncated".
 * The declared width x height is checked against the pixel limit before
 * any pixel buffer is allocated.  Reentrant, no global state: any thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decoders.h"

enum { BMP_RAW = 0, BMP_RLE8 = 1, BMP_RLE4 = 2, BMP_BITFIELDS = 3 };

/* How one stored row is unpacked (Pillow's "rawmode"). */
enum bmp_raw {
    RAW_P1, RAW_P4, RAW_P8,     /* palette indices, 1/4/8 bits */
    RAW_1,                      /* "1": 1 bit, 0 -> 0, 1 -> 255 */
    RAW_L,                      /* "L": one grey byte */
    RAW_BGR15, RAW_BGR16,       /* 16-bit 5-5-5 / 5-6-5, little-endian */
    RAW_BGR, RAW_BGRX, RAW_XBGR, RAW_ABGR, RAW_RGBA, RAW_BGRA,
};

/* Bits per pixel each raw mode consumes (Pillow's unpacker "bits"). */
static int raw_bits(enum bmp_raw r)
{
    switch (r) {
    case RAW_P1: case RAW_1: return 1;
    case RAW_P4: return 4;
    case RAW_P8: case RAW_L: return 8;
    case RAW_BGR15: case RAW_BGR16: return 16;
    case RAW_BGR: return 24;
    default: return 32;
    }
}

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* A file position that reads like Python's BytesIO: a read past the end
 * returns what is left. */
struct bmp_in {
    const uint8_t *d;
    size_t len, pos;
};

static size_t in_avail(const struct bmp_in *in) { return in->pos < in->len ? in->len - in->pos : 0; }

/* Pixel index/grey/RGB of pixel x of a stored row, written as RGB through
 * the 256-entry palette pal[256][3] (used only by the palette modes). */
static void unpack_row(enum bmp_raw raw, const uint8_t *row, int w,
                       const uint8_t pal[256][3], uint8_t *rgb)
{
    for (int x = 0; x < w; x++, rgb += 3) {
        unsigned v;
        const uint8_t *p;
        switch (raw) {
        case RAW_P1: case RAW_P4: case RAW_P8:
            if (raw == RAW_P1) v = (row[x >> 3] >> (7 - (x & 7))) & 1;
            else if (raw == RAW_P4) v = (row[x >> 1] >> ((x & 1) ? 0 : 4)) & 15;
            else v = row[x];
            memcpy(rgb, pal[v], 3);
            break;
        case RAW_1:
            v = ((row[x >> 3] >> (7 - (x & 7))) & 1) ? 255 : 0;
            rgb[0] = rgb[1] = rgb[2] = (uint8_t)v;
            break;
        case RAW_L:
            rgb[0] = rgb[1] = rgb[2] = row[x];
            break;
        case RAW_BGR15:             /* xRRRRRGG GGGBBBBB, each 5 bits * 255 / 31 */
            v = rd16(row + 2 * x);
            rgb[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
            rgb[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
            rgb[2] = (uint8_t)((v & 31) * 255 / 31);
            break;
        case RAW_BGR16:             /* RRRRRGGG GGGBBBBB: 5/6/5 bits scaled to 255 */
            v = rd16(row + 2 * x);
            rgb[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
            rgb[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
            rgb[2] = (uint8_t)((v & 31) * 255 / 31);
            break;
        case RAW_BGR:
            p = row + 3 * x;
            rgb[0] = p[2]; rgb[1] = p[1]; rgb[2] = p[0];
            break;
        case RAW_BGRX: case RAW_BGRA:
            p = row + 4 * x;
            rgb[0] = p[2]; rgb[1] = p[1]; rgb[2] = p[0];
            break;
        case RAW_XBGR: case RAW_ABGR:
            p = row + 4 * x;
            rgb[0] = p[3]; rgb[1] = p[2]; rgb[2] = p[1];
            break;
        case RAW_RGBA:
            p = row + 4 * x;
            rgb[0] = p[0]; rgb[1] = p[1]; rgb[2] = p[2];
            break;
        }
    }
}

/* Port of Pillow 9.4's BmpRleDecoder.decode: expands RLE8/RLE4 codes read
 * from in (at the pixel offset) into one index byte per pixel, in file row
 * order.  Writes at most cap = w*h bytes into idx; *outlen is the logical
 * length Pillow's bytearray would reach (it may exceed cap by the last
 * run, whose tail is discarded).  Returns VS_BAD_INPUT where Python would
 * raise (a delta whose second read is short). */
static enum vs_status rle_expand(struct bmp_in *in, int rle4, size_t w, size_t cap,
                                 uint8_t *idx, size_t *outlen, struct vs_err *err)
{
    size_t n = 0, x = 0;
#define RLE_PUT(v) do { if (n < cap) idx[n] = (uint8_t)(v); n++; } while (0)
    while (n < cap) {
        if (in_avail(in) < 2) break;               /* `if not pixels or not byte` */
        unsigned count = in->d[in->pos], byte = in->d[in->pos + 1];
        in->pos += 2;
        if (count) {                               /* encoded run */
            size_t np = count;
            if (x + np > w) np = x < w ? w - x : 0; /* clipped at the row end */
            for (size_t i = 0; i < np; i++)
                RLE_PUT(rle4 ? ((i & 1) ? (byte & 15) : (byte >> 4)) : byte);
            x += np;
        } else if (byte == 0) {                    /* end of line: pad to a row */
            while (n % w) RLE_PUT(0);
            x = 0;
        } else if (byte == 1) {                    /* end of bitmap */
            break;
        } else if (byte == 2) {                    /* delta: Pillow reads 2, then 2 more */
            if (in_avail(in) < 2) break;
            in->pos += 2;
            if (in_avail(in) < 2)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "BMP: RLE delta escape cut short at byte %zu", in->pos);
            unsigned right = in->d[in->pos], up = in->d[in->pos + 1];
            in->pos += 2;
            size_t skip = right + (size_t)up * w;
            /* Bytes past cap are never read; only the length matters. */
            for (size_t i = 0; i < skip && n < cap; i++) RLE_PUT(0);
            x = n % w;
        } else {                                   /* absolute run of `byte` pixels */
            size_t want = rle4 ? byte / 2 : byte;
            size_t got = VS_MIN(want, in_avail(in));
            for (size_t i = 0; i < got; i++) {
                unsigned b = in->d[in->pos + i];
                if (rle4) { RLE_PUT(b >> 4); RLE_PUT(b & 15); }
                else RLE_PUT(b);
            }
            in->pos += got;
            if (got < want) break;
            x += byte;
            if (in->pos % 2) in->pos++;            /* word alignment, absolute offset */
        }
    }
#undef RLE_PUT
    *outlen = n;
    return VS_OK;
}

enum vs_status vs_decode_bmp(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err)
{
    struct bmp_in in = {data, len, 0};
    if (len < 14 || data[0] != 'B' || data[1] != 'M')
        return vs_err_set(err, VS_BAD_INPUT, "BMP: file header cut short (%zu bytes)", len);
    uint64_t offset = rd32(data + 10);
    in.pos = 14;

    /* ---- info header ---- */
    if (in_avail(&in) < 4)
        return vs_err_set(err, VS_BAD_INPUT, "BMP: info header size cut short");
    uint32_t hsize = rd32(data + 14);
    in.pos += 4;
    if (hsize > 4) {
        if (in_avail(&in) < hsize - 4)
            return vs_err_set(err, VS_BAD_INPUT,
                              "BMP: info header of %u bytes cut short (truncated file read)", hsize);
    }
    const uint8_t *hd = data + 18;
    uint64_t w, h, colors;
    unsigned bits, compression;
    int topdown = 0, padding;
    uint32_t rmask = 0, gmask = 0, bmask = 0, amask = 0;
    if (hsize == 12) {
        w = rd16(hd); h = rd16(hd + 2); bits = rd16(hd + 6);
        compression = BMP_RAW;
        colors = 0;
        padding = 3;
        in.pos += 8;
    } else if (hsize == 40 || hsize == 64 || hsize == 108 || hsize == 124) {
        topdown = hd[7] == 0xFF;                   /* height's top byte 0xFF: negative */
        w = rd32(hd);
        h = topdown ? (uint64_t)4294967296u - rd32(hd + 4) : rd32(hd + 4);
        bits = rd16(hd + 10);
        compression = rd32(hd + 12);
        colors = rd32(hd + 28);
        padding = 4;
        in.pos += hsize - 4;
        if (compression == BMP_BITFIELDS) {
            if (hsize - 4 >= 52) {
                rmask = rd32(hd + 36); gmask = rd32(hd + 40);
                bmask = rd32(hd + 44); amask = rd32(hd + 48);
            } else {                               /* masks follow a 40-byte header */
                if (in_avail(&in) < 12)
                    return vs_err_set(err, VS_BAD_INPUT, "BMP: bit field masks cut short");
                rmask = rd32(data + in.pos); gmask = rd32(data + in.pos + 4);
                bmask = rd32(data + in.pos + 8);
                in.pos += 12;
            }
        }
    } else {
        return vs_err_set(err, VS_UNSUPPORTED, "BMP: unsupported info header size %u", hsize);
    }
    if (colors == 0) {
        if (bits >= 63) colors = UINT64_MAX;       /* 1 << bits, beyond any valid palette */
        else colors = (uint64_t)1 << bits;
    }
    if (offset == 14 + (uint64_t)hsize && bits <= 8) offset += 4 * colors;

    enum bmp_raw raw;
    const char *mode;
    switch (bits) {
    case 1: raw = RAW_P1; mode = "P"; break;
    case 4: raw = RAW_P4; mode = "P"; break;
    case 8: raw = RAW_P8; mode = "P"; break;
    case 16: raw = RAW_BGR15; mode = "RGB"; break;
    case 24: raw = RAW_BGR; mode = "RGB"; break;
    case 32: raw = RAW_BGRX; mode = "RGB"; break;
    default:
        return vs_err_set(err, VS_UNSUPPORTED, "BMP: unsupported pixel depth %u bits", bits);
    }
    int rle = 0;
    if (compression == BMP_BITFIELDS) {
        int ok = 0;
        if (bits == 32) {
            static const struct { uint32_t m[4]; enum bmp_raw raw; } k32[] = {
                {{0xFF0000, 0xFF00, 0xFF, 0}, RAW_BGRX},
                {{0xFF000000u, 0xFF0000, 0xFF00, 0}, RAW_XBGR},
                {{0xFF000000u, 0xFF0000, 0xFF00, 0xFF}, RAW_ABGR},
                {{0xFF, 0xFF00, 0xFF0000, 0xFF000000u}, RAW_RGBA},
                {{0xFF0000, 0xFF00, 0xFF, 0xFF000000u}, RAW_BGRA},
                {{0, 0, 0, 0}, RAW_BGRA},
            };
            for (size_t i = 0; i < VS_ARRAY_LEN(k32) && !ok; i++)
                if (k32[i].m[0] == rmask && k32[i].m[1] == gmask && k32[i].m[2] == bmask &&
                    k32[i].m[3] == amask) {
                    raw = k32[i].raw;
                    ok = 1;
                }
            if (ok && (raw == RAW_ABGR || raw == RAW_RGBA || raw == RAW_BGRA)) mode = "RGBA";
        } else if (bits == 24) {
            ok = rmask == 0xFF0000 && gmask == 0xFF00 && bmask == 0xFF;
            raw = RAW_BGR;
        } else if (bits == 16) {
            if (rmask == 0xF800 && gmask == 0x7E0 && bmask == 0x1F) { raw = RAW_BGR16; ok = 1; }
            else if (rmask == 0x7C00 && gmask == 0x3E0 && bmask == 0x1F) { raw = RAW_BGR15; ok = 1; }
        }
        if (!ok)
            return vs_err_set(err, VS_UNSUPPORTED,
                              "BMP: unsupported bit field layout (%u bits, masks %08x/%08x/%08x/%08x)",
                              bits, rmask, gmask, bmask, amask);
    } else if (compression == BMP_RLE8 || compression == BMP_RLE4) {
        rle = 1;
    } else if (compression != BMP_RAW) {
        return vs_err_set(err, VS_UNSUPPORTED, "BMP: unsupported compression %u", compression);
    }

    /* ---- palette: 256 entries, Pillow's grey ramp where the file has none ---- */
    uint8_t pal[256][3];
    for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
    int pal_too_big = 0;
    if (mode[0] == 'P') {
        if (colors == 0 || colors > 65536)
            return vs_err_set(err, VS_UNSUPPORTED, "BMP: unsupported palette size %llu",
                              (unsigned long long)colors);
        size_t plen = VS_MIN((size_t)colors * (size_t)padding, in_avail(&in));
        const uint8_t *p = data + in.pos;
        in.pos += plen;
        /* Grey test over entries 0..colors-1 (or 0 and 255 for two colours):
         * entry i must read (i,i,i); a short palette fails it. */
        int grey = 1;
        for (uint64_t i = 0; i < colors && grey; i++) {
            unsigned val = colors == 2 ? (i ? 255u : 0u) : (unsigned)(i & 255);
            size_t at = (size_t)i * padding;
            if (at + 3 > plen || p[at] != val || p[at + 1] != val || p[at + 2] != val) grey = 0;
        }
        if (grey) {
            mode = colors == 2 ? "1" : "L";
            raw = colors == 2 ? RAW_1 : RAW_L;
        } else {
            size_t n = plen / (size_t)padding;     /* putpalette: len*8/bits entries */
            if (n > 256) pal_too_big = 1;
            for (size_t i = 0; i < n && i < 256; i++) {
                pal[i][0] = p[i * padding + 2];    /* stored B, G, R(, X) */
                pal[i][1] = p[i * padding + 1];
                pal[i][2] = p[i * padding + 0];
            }
        }
    }
    if (offset == 0) offset = in.pos;              /* `offset or fp.tell()` */

    if (w == 0 || h == 0)
        return vs_err_set(err, VS_BAD_INPUT, "BMP: empty image (%llux%llu)",
                          (unsigned long long)w, (unsigned long long)h);
    enum vs_status st = vs_decode_check_pixels("BMP", w, h, lim, err);
    if (st != VS_OK) return st;
    if (w > INT32_MAX || h > INT32_MAX)
        return vs_err_set(err, VS_TOO_LARGE, "BMP: dimensions %llux%llu out of range",
                          (unsigned long long)w, (unsigned long long)h);

    size_t W = (size_t)w, H = (size_t)h, npx = W * H;
    size_t rgb_len;
    if (!vs_mul_size(npx, 3, &rgb_len))
        return vs_err_set(err, VS_TOO_LARGE, "BMP: %zux%zu too large", W, H);

    if (rle) {
        /* Pillow decodes RLE into "L" (grey palette) or "P" indices; a "1"
         * or RGB image has no such unpacker and fails. */
        if (mode[0] != 'P' && mode[0] != 'L')
            return vs_err_set(err, VS_BAD_INPUT,
                              "BMP: RLE compression with a %u-bit %s image", bits, mode);
        uint8_t *idx = calloc(npx, 1);
        uint8_t *rgb = malloc(rgb_len);
        if (!idx || !rgb) {
            free(idx); free(rgb);
            return vs_err_set(err, VS_NOMEM, "BMP: out of memory for %zux%zu pixels", W, H);
        }
        struct bmp_in rin = {data, len, offset > len ? len : (size_t)offset};
        size_t n = 0;
        st = rle_expand(&rin, compression == BMP_RLE4, W, npx, idx, &n, err);
        if (st == VS_OK && n < npx)
            st = vs_err_set(err, VS_BAD_INPUT,
                            "BMP: RLE data ends after %zu of %zu pixels (not enough image data)", n, npx);
        if (st == VS_OK && pal_too_big)
            st = vs_err_set(err, VS_BAD_INPUT, "BMP: palette of %llu entries (invalid palette size)",
                            (unsigned long long)colors);
        if (st != VS_OK) { free(idx); free(rgb); return st; }
        /* Rows come in file order: bottom-up unless the height was negative. */
        for (size_t y = 0; y < H; y++) {
            const uint8_t *row = idx + y * W;
            uint8_t *dst = rgb + (topdown ? y : H - 1 - y) * W * 3;
            for (size_t x = 0; x < W; x++) {
                const uint8_t *c = mode[0] == 'L' ? (const uint8_t[3]){row[x], row[x], row[x]} : pal[row[x]];
                memcpy(dst + 3 * x, c, 3);
            }
        }
        free(idx);
        out->rgb = rgb;
    } else {
        /* Raw rows: each stored row is `stride` bytes (4-byte aligned from
         * the file's bit depth); the unpacker reads rowbytes of it. */
        uint64_t stride = ((w * bits + 31) >> 3) & ~(uint64_t)3;
        uint64_t rowbytes = (w * (uint64_t)raw_bits(raw) + 7) / 8;
        if (rowbytes > stride)
            return vs_err_set(err, VS_BAD_INPUT, "BMP: row of %llu bytes exceeds stride %llu",
                              (unsigned long long)rowbytes, (unsigned long long)stride);
        if (h > 1 && stride > (UINT64_MAX - rowbytes) / (h - 1))
            return vs_err_set(err, VS_TOO_LARGE, "BMP: %llux%llu rows overflow", (unsigned long long)w,
                              (unsigned long long)h);
        uint64_t need = stride * (h - 1) + rowbytes;
        if (offset > len || len - offset < need)
            return vs_err_set(err, VS_BAD_INPUT,
                              "BMP: pixel data truncated (%llu bytes needed at offset %llu, file has %zu)",
                              (unsigned long long)need, (unsigned long long)offset, len);
        if (pal_too_big)
            return vs_err_set(err, VS_BAD_INPUT, "BMP: palette of %llu entries (invalid palette size)",
                              (unsigned long long)colors);
        uint8_t *rgb = malloc(rgb_len);
        if (!rgb) return vs_err_set(err, VS_NOMEM, "BMP: out of memory for %zux%zu pixels", W, H);
        for (size_t y = 0; y < H; y++) {
            const uint8_t *row = data + offset + y * stride;
            unpack_row(raw, row, (int)W, (const uint8_t(*)[3])pal, rgb + (topdown ? y : H - 1 - y) * W * 3);
        }
        out->rgb = rgb;
    }
    out->width = (int)W;
    out->height = (int)H;
    snprintf(out->mode, sizeof out->mode, "%s", mode);
    out->exif = NULL;
    out->exif_len = 0;
    out->xmp_orientation = 0;
    return VS_OK;
}
