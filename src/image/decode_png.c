/* decode_png.c: PNG to RGB8, as Pillow 9.4's PngImagePlugin + ZipDecode read it.
 *
 * Pillow does not use libpng: it walks the chunks itself and inflates IDAT
 * with zlib row by row.  Its verdicts differ from libpng's, and the server
 * must give Pillow's, so this file is a chunk walker + row decoder written
 * to the same rules:
 *   open (up to the first IDAT/fdAT/IEND): every chunk's CRC is checked
 *     (critical, ancillary, unknown alike; IDAT is never checked); known
 *     chunks are parsed with Pillow's length rules (short gAMA/tRNS/cHRM,
 *     pHYs < 9, sRGB < 1, acTL < 8, fcTL < 26 fail); unknown chunks are
 *     skipped; zTXt/iTXt/iCCP inflating past 1 MiB fail ("Decompressed
 *     Data Too Large"), text totalling over 64 MiB fails; APNG fcTL/fdAT
 *     sequence numbers and frame bounds are validated; PLTE counts only
 *     while the mode is "P"; no usable IHDR, or a zero size, is "cannot
 *     identify".
 *   load: IDAT data is fed to inflate in the pieces ImageFile.load reads
 *     (each chunk in 64 KiB slices), one row (filter byte + bytes) of
 *     output at a time; decoding ends with success when the last row is
 *     written or the zlib stream ends on a row boundary (missing rows stay
 *     0), so trailing data is never inflated; a zlib error is "broken data
 *     stream", a bad filter byte "unrecognized data stream"; running out of
 *     IDAT first is "image file is truncated".  The chunks after the image
 *     are then parsed (no CRC check) up to IEND, a broken chunk header, or
 *     the next APNG fcTL; their errors still fail the load.
 *   pixels: "1" -> 0/255, L;2 -> v*85, L;4 -> v*17, 16-bit grey is mode
 *     "I" and clamps at 255, 16-bit colour keeps the high byte, alpha is
 *     dropped, palette indices past PLTE use the grey ramp (i,i,i), a PLTE
 *     of more than 256 entries fails ("invalid palette size").
 *   metadata: the EXIF block (eXIf, a tEXt "exif", or ImageMagick's hex
 *     "Raw profile type exif") and the XMP tiff:Orientation digit, chosen
 *     as PngImageFile.getexif() would choose them.
 * The declared size is checked against the pixel limit before any pixel
 * buffer is allocated; every allocation is bounded by it or by 1 MiB.
 * Reentrant, no global state: any thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "decoders.h"

#define PNG_READ_BLOCK 65536                 /* ImageFile.decodermaxblock */
#define PNG_MAX_TEXT_CHUNK (1u << 20)        /* MAX_TEXT_CHUNK (ImageFile.SAFEBLOCK) */
#define PNG_MAX_TEXT_MEMORY (64ull << 20)    /* MAX_TEXT_MEMORY */
/* Ours, not Pillow's: all zTXt/iTXt/iCCP chunks of a file together may
 * inflate at most this much.  Pillow inflates each up to 1 MiB however
 * many there are (2,000 iCCP chunks in a 2 MB file: 5.5 s of CPU; a 20 MiB
 * upload: about a minute per request); a real file has one profile and a
 * few texts. */
#define PNG_MAX_INFLATED_METADATA (64ull << 20)

/* Pillow's rawmodes: how one stored pixel unpacks. */
enum png_raw {
    PR_1, PR_L2, PR_L4, PR_L, PR_I16B, PR_RGB, PR_RGB16B,
    PR_P1, PR_P2, PR_P4, PR_P, PR_LA, PR_LA16B, PR_RGBA, PR_RGBA16B,
};

static const struct png_modeinfo {
    uint8_t depth, ctype;
    const char *mode;
    enum png_raw raw;
    uint8_t bits;           /* unpacker bits per pixel */
    uint8_t channels;       /* 1: grey/index plane, 3: RGB plane */
} png_modes[] = {
    {1, 0, "1", PR_1, 1, 1},       {2, 0, "L", PR_L2, 2, 1},
    {4, 0, "L", PR_L4, 4, 1},      {8, 0, "L", PR_L, 8, 1},
    {16, 0, "I", PR_I16B, 16, 1},  {8, 2, "RGB", PR_RGB, 24, 3},
    {16, 2, "RGB", PR_RGB16B, 48, 3},
    {1, 3, "P", PR_P1, 1, 1},      {2, 3, "P", PR_P2, 2, 1},
    {4, 3, "P", PR_P4, 4, 1},      {8, 3, "P", PR_P, 8, 1},
    {8, 4, "LA", PR_LA, 16, 1},    {16, 4, "RGBA", PR_LA16B, 32, 1},
    {8, 6, "RGBA", PR_RGBA, 32, 3}, {16, 6, "RGBA", PR_RGBA16B, 64, 3},
};

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static unsigned be16(const uint8_t *p) { return (unsigned)(p[0] << 8 | p[1]); }

/* ------------------------------------------------------------------------ */
/* Chunk stream state (PngStream)                                           */
/* ------------------------------------------------------------------------ */

struct png {
    const uint8_t *d;
    size_t len, pos;                 /* file position, Python-style reads */
    struct vs_err *err;
    /* IHDR */
    uint64_t w, h;
    const struct png_modeinfo *mi;   /* NULL: no known mode yet */
    int interlace;
    /* PLTE taken while the mode was "P" */
    const uint8_t *plte;
    size_t plte_len;
    /* APNG */
    int64_t n_frames;                /* -1: not an APNG */
    int64_t seq;                     /* -1: no sequence number seen */
    int have_bbox, default_image;
    uint64_t bbox[4];
    /* text */
    uint64_t text_memory;
    uint64_t inflated;      /* bytes all metadata chunks inflated to (PNG_MAX_INFLATED_METADATA) */
    /* metadata: the current info["exif"], info["Raw profile type exif"],
     * and the orientation digit of info["XML:com.adobe.xmp"] */
    uint8_t *exif;
    size_t exif_len;
    char *raw_profile;
    size_t raw_profile_len;
    int xmp_orient;
    int after_idat;                  /* 0 while opening, 1 in load_end */
};

static size_t png_avail(const struct png *s) { return s->pos < s->len ? s->len - s->pos : 0; }

/* fp.read(n) that never fails: advances by what is there. */
static void png_skip(struct png *s, uint64_t n)
{
    size_t a = png_avail(s);
    s->pos += n < a ? (size_t)n : a;
}

static enum vs_status bad(struct png *s, const char *fmt, const char *cid, unsigned long long v)
{
    char what[128];
    snprintf(what, sizeof what, fmt, v);
    return vs_err_set(s->err, VS_BAD_INPUT, "PNG: %s%s%s%s", cid ? "chunk " : "",
                      cid ? cid : "", cid ? ": " : "", what);
}

/* ImageFile._safe_read: all `n` bytes or "Truncated File Read". */
static enum vs_status safe_read(struct png *s, const char *cid, uint64_t n, const uint8_t **p)
{
    if (n > png_avail(s))
        return bad(s, "%llu bytes declared past the end of the file (truncated file read)", cid,
                   (unsigned long long)n);
    *p = s->d + s->pos;
    s->pos += (size_t)n;
    return VS_OK;
}

static int is_cid_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* ChunkStream.read(): 8 header bytes, type of four [A-Za-z0-9_].  Returns
 * 0 with the type and length, or -1 when Python would raise. */
static int chunk_header(struct png *s, char cid[5], uint32_t *length)
{
    if (png_avail(s) < 8) { png_skip(s, 8); return -1; }
    const uint8_t *p = s->d + s->pos;
    s->pos += 8;
    for (int i = 0; i < 4; i++) {
        if (!is_cid_char(p[4 + i])) return -1;
        cid[i] = (char)p[4 + i];
    }
    cid[4] = '\0';
    *length = be32(p);
    return 0;
}

/* _safe_zlib_decompress: inflates at most 1 MiB.  Returns VS_OK with the
 * output (malloc'd, *out may be NULL for an empty result), VS_TOO_LARGE
 * when output is capped with input left over, or VS_BAD_INPUT with
 * *zerr = 1 for a zlib error (which the callers tolerate). */
static enum vs_status text_inflate(const uint8_t *in, size_t n, uint8_t **out, size_t *outlen,
                                   int *zerr, uint64_t *produced)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    *out = NULL;
    *outlen = 0;
    *zerr = 0;
    if (inflateInit(&zs) != Z_OK) return VS_NOMEM;
    uint8_t *buf = malloc(PNG_MAX_TEXT_CHUNK);
    if (!buf) { inflateEnd(&zs); return VS_NOMEM; }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = buf;
    zs.avail_out = PNG_MAX_TEXT_CHUNK;
    enum vs_status st = VS_OK;
    for (;;) {
        int r = inflate(&zs, Z_SYNC_FLUSH);
        if (r == Z_STREAM_END) break;
        if (r == Z_OK || r == Z_BUF_ERROR) {
            if (zs.avail_in == 0) break;                  /* input used up: partial is fine */
            if (zs.avail_out == 0) { st = VS_TOO_LARGE; break; }
            if (r == Z_BUF_ERROR) break;
            continue;
        }
        *zerr = 1;                                          /* zlib.error */
        st = VS_BAD_INPUT;
        break;
    }
    size_t got = PNG_MAX_TEXT_CHUNK - zs.avail_out;
    *produced = got;   /* the work done, whatever became of it */
    inflateEnd(&zs);
    if (st != VS_OK) { free(buf); return st; }
    *out = buf;
    *outlen = got;
    return VS_OK;
}

/* Python's strict UTF-8 decode check; *chars gets the code point count. */
static int utf8_valid(const uint8_t *p, size_t n, size_t *chars)
{
    size_t i = 0, c = 0;
    while (i < n) {
        uint8_t b = p[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) { i++; c++; continue; }
        else if (b >= 0xC2 && b <= 0xDF) { k = 1; cp = b & 0x1F; }
        else if (b >= 0xE0 && b <= 0xEF) { k = 2; cp = b & 0x0F; }
        else if (b >= 0xF0 && b <= 0xF4) { k = 3; cp = b & 0x07; }
        else return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
        c++;
    }
    *chars = c;
    return 1;
}

/* re.search(r'tiff:Orientation(="|>)([0-9])', v): the digit, or -1. */
static int xmp_orientation(const uint8_t *v, size_t n)
{
    static const char pat[] = "tiff:Orientation";
    const size_t pl = sizeof pat - 1;
    for (size_t i = 0; i + pl < n; i++) {
        if (memcmp(v + i, pat, pl) != 0) continue;
        size_t j = i + pl;
        if (j + 1 < n && v[j] == '=' && v[j + 1] == '"' && j + 2 < n && v[j + 2] >= '0' && v[j + 2] <= '9')
            return v[j + 2] - '0';
        if (v[j] == '>' && j + 1 < n && v[j + 1] >= '0' && v[j + 1] <= '9') return v[j + 1] - '0';
    }
    return -1;
}

static enum vs_status set_bytes(uint8_t **dst, size_t *dlen, const uint8_t *a, size_t alen,
                                const uint8_t *b, size_t blen)
{
    uint8_t *p = malloc(alen + blen + 1);
    if (!p) return VS_NOMEM;
    if (alen) memcpy(p, a, alen);
    if (blen) memcpy(p + alen, b, blen);
    p[alen + blen] = 0;
    free(*dst);
    *dst = p;
    *dlen = alen + blen;
    return VS_OK;
}

/* info[key] = value for a text chunk: keeps what getexif() may read. */
static enum vs_status text_value(struct png *s, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
    if (klen == 4 && memcmp(k, "exif", 4) == 0) {
        if (set_bytes(&s->exif, &s->exif_len, v, vlen, NULL, 0) != VS_OK)
            return vs_err_set(s->err, VS_NOMEM, "PNG: out of memory for an exif text chunk");
    } else if (klen == 21 && memcmp(k, "Raw profile type exif", 21) == 0) {
        if (set_bytes((uint8_t **)&s->raw_profile, &s->raw_profile_len, v, vlen, NULL, 0) != VS_OK)
            return vs_err_set(s->err, VS_NOMEM, "PNG: out of memory for a raw EXIF profile");
    } else if (klen == 17 && memcmp(k, "XML:com.adobe.xmp", 17) == 0) {
        s->xmp_orient = vlen ? xmp_orientation(v, vlen) : -1;
    }
    return VS_OK;
}

static enum vs_status text_memory(struct png *s, const char *cid, uint64_t n)
{
    s->text_memory += n;
    if (s->text_memory > PNG_MAX_TEXT_MEMORY)
        return vs_err_set(s->err, VS_TOO_LARGE, "PNG: chunk %s: text chunks total %llu bytes (limit %llu)",
                          cid, (unsigned long long)s->text_memory, PNG_MAX_TEXT_MEMORY);
    return VS_OK;
}

/* Bounded inflate of a compressed text/profile chunk body; zlib errors
 * leave *out NULL and return VS_OK (Pillow ignores them). */
static enum vs_status chunk_inflate(struct png *s, const char *cid, const uint8_t *z, size_t n,
                                    uint8_t **out, size_t *outlen, int *zerr)
{
    uint64_t produced = 0;
    enum vs_status st = text_inflate(z, n, out, outlen, zerr, &produced);
    s->inflated += produced;
    if (s->inflated > PNG_MAX_INFLATED_METADATA) {
        free(*out);
        *out = NULL;
        return vs_err_set(s->err, VS_TOO_LARGE,
                          "PNG: chunk %s: metadata chunks inflate to more than %llu bytes in all "
                          "(a decompression bomb)", cid, PNG_MAX_INFLATED_METADATA);
    }
    if (st == VS_TOO_LARGE)
        return vs_err_set(s->err, VS_TOO_LARGE,
                          "PNG: chunk %s inflates past %u bytes (decompressed data too large)",
                          cid, PNG_MAX_TEXT_CHUNK);
    if (st == VS_NOMEM) return vs_err_set(s->err, VS_NOMEM, "PNG: out of memory inflating chunk %s", cid);
    return VS_OK;
}

/* Outcome of one chunk handler. */
enum { CH_DATA, CH_IMAGE, CH_END, CH_UNKNOWN };

/* PngStream.chunk_<cid>.  Reads the chunk body (*data, for the CRC) and
 * returns CH_DATA, CH_IMAGE (IDAT/fdAT: image data starts at s->pos),
 * CH_END (IEND), CH_UNKNOWN (no handler; nothing read); or -1 with
 * s->err set. */
static int chunk_call(struct png *s, const char *cid, uint32_t length, const uint8_t **data,
                      uint64_t *idat_len)
{
    const uint8_t *p = NULL;
    enum vs_status st;
    *data = NULL;
#define READ_BODY() do { if (safe_read(s, cid, length, &p) != VS_OK) return -1; *data = p; } while (0)
    if (!strcmp(cid, "IHDR")) {
        READ_BODY();
        if (length < 13) { bad(s, "truncated IHDR chunk (%llu bytes)", cid, length); return -1; }
        s->w = be32(p);
        s->h = be32(p + 4);
        for (size_t i = 0; i < VS_ARRAY_LEN(png_modes); i++)
            if (png_modes[i].depth == p[8] && png_modes[i].ctype == p[9]) s->mi = &png_modes[i];
        if (p[12]) s->interlace = 1;
        if (p[11]) { bad(s, "unknown filter method %llu", cid, p[11]); return -1; }
        return CH_DATA;
    }
    if (!strcmp(cid, "IDAT")) {
        if (s->n_frames >= 0 && !s->have_bbox) s->default_image = 1;
        /* Before an IHDR with a known mode Pillow has no rawmode: the
         * handler raises AttributeError and the chunk is skipped as unknown. */
        if (!s->mi) return CH_UNKNOWN;
        *idat_len = length;
        return CH_IMAGE;
    }
    if (!strcmp(cid, "IEND")) return CH_END;
    if (!strcmp(cid, "PLTE")) {
        READ_BODY();
        if (s->mi && s->mi->mode[0] == 'P' && !s->after_idat) { s->plte = p; s->plte_len = length; }
        return CH_DATA;
    }
    if (!strcmp(cid, "tRNS")) {
        READ_BODY();
        if (s->mi) {
            const char *m = s->mi->mode;
            if ((!strcmp(m, "1") || !strcmp(m, "L") || !strcmp(m, "I")) && length < 2) {
                bad(s, "transparency of %llu bytes for a grey image", cid, length);
                return -1;
            }
            if (!strcmp(m, "RGB") && length < 6) {
                bad(s, "transparency of %llu bytes for an RGB image", cid, length);
                return -1;
            }
        }
        return CH_DATA;
    }
    if (!strcmp(cid, "gAMA")) {
        READ_BODY();
        if (length < 4) { bad(s, "%llu bytes, need 4", cid, length); return -1; }
        return CH_DATA;
    }
    if (!strcmp(cid, "cHRM")) {
        READ_BODY();
        if (length % 4) { bad(s, "%llu bytes, not a multiple of 4", cid, length); return -1; }
        return CH_DATA;
    }
    if (!strcmp(cid, "sRGB")) {
        READ_BODY();
        if (length < 1) { bad(s, "truncated sRGB chunk (%llu bytes)", cid, length); return -1; }
        return CH_DATA;
    }
    if (!strcmp(cid, "pHYs")) {
        READ_BODY();
        if (length < 9) { bad(s, "truncated pHYs chunk (%llu bytes)", cid, length); return -1; }
        return CH_DATA;
    }
    if (!strcmp(cid, "tEXt")) {
        READ_BODY();
        const uint8_t *nul = length ? memchr(p, 0, length) : NULL;
        size_t klen = nul ? (size_t)(nul - p) : length;
        const uint8_t *v = nul ? nul + 1 : p + length;
        size_t vlen = nul ? length - klen - 1 : 0;
        if (klen) {
            if (text_value(s, p, klen, v, vlen) != VS_OK) return -1;
            if (text_memory(s, cid, vlen) != VS_OK) return -1;
        }
        return CH_DATA;
    }
    if (!strcmp(cid, "zTXt")) {
        READ_BODY();
        const uint8_t *nul = length ? memchr(p, 0, length) : NULL;
        size_t klen = nul ? (size_t)(nul - p) : length;
        const uint8_t *v = nul ? nul + 1 : p + length;
        size_t vlen = nul ? length - klen - 1 : 0;
        unsigned method = vlen ? v[0] : 0;
        if (method != 0) { bad(s, "unknown compression method %llu", cid, method); return -1; }
        uint8_t *txt = NULL;
        size_t tlen = 0;
        int zerr;
        st = chunk_inflate(s, cid, vlen ? v + 1 : v, vlen ? vlen - 1 : 0, &txt, &tlen, &zerr);
        if (st != VS_OK) return -1;
        if (klen) {
            st = text_value(s, p, klen, txt, tlen);
            if (st == VS_OK) st = text_memory(s, cid, tlen);
        }
        free(txt);
        return st == VS_OK ? CH_DATA : -1;
    }
    if (!strcmp(cid, "iTXt")) {
        READ_BODY();
        const uint8_t *nul = length ? memchr(p, 0, length) : NULL;
        if (!nul) return CH_DATA;
        size_t klen = (size_t)(nul - p);
        const uint8_t *r = nul + 1, *end = p + length;
        if (end - r < 2) return CH_DATA;
        unsigned cf = r[0], cm = r[1];
        r += 2;
        const uint8_t *n1 = memchr(r, 0, (size_t)(end - r));
        if (!n1) return CH_DATA;
        const uint8_t *n2 = memchr(n1 + 1, 0, (size_t)(end - n1 - 1));
        if (!n2) return CH_DATA;
        const uint8_t *lang = r, *tk = n1 + 1, *v = n2 + 1;
        size_t langlen = (size_t)(n1 - r), tklen = (size_t)(n2 - tk), vlen = (size_t)(end - v);
        uint8_t *txt = NULL;
        if (cf != 0) {
            if (cm != 0) return CH_DATA;
            size_t tlen;
            int zerr;
            if (chunk_inflate(s, cid, v, vlen, &txt, &tlen, &zerr) != VS_OK) return -1;
            if (zerr) return CH_DATA;
            v = txt;
            vlen = tlen;
        }
        size_t chars, dummy;
        if (!utf8_valid(lang, langlen, &dummy) || !utf8_valid(tk, tklen, &dummy) ||
            !utf8_valid(v ? v : (const uint8_t *)"", vlen, &chars)) {
            free(txt);
            return CH_DATA;
        }
        st = text_value(s, p, klen, v, vlen);
        if (st == VS_OK) st = text_memory(s, cid, chars);
        free(txt);
        return st == VS_OK ? CH_DATA : -1;
    }
    if (!strcmp(cid, "eXIf")) {
        READ_BODY();
        if (set_bytes(&s->exif, &s->exif_len, (const uint8_t *)"Exif\0\0", 6, p, length) != VS_OK) {
            vs_err_set(s->err, VS_NOMEM, "PNG: out of memory for eXIf");
            return -1;
        }
        return CH_DATA;
    }
    if (!strcmp(cid, "iCCP")) {
        READ_BODY();
        if (length == 0) { bad(s, "empty iCCP chunk%s", cid, 0); return -1; }
        const uint8_t *nul = memchr(p, 0, length);
        size_t i = nul ? (size_t)(nul - p) : length - 1;     /* s.find() == -1 reads s[-1] */
        if (p[i] != 0) { bad(s, "unknown compression method %llu", cid, p[i]); return -1; }
        size_t zstart = nul ? i + 2 : 1;
        uint8_t *prof = NULL;
        size_t plen;
        int zerr;
        if (chunk_inflate(s, cid, p + VS_MIN(zstart, (size_t)length),
                          length - VS_MIN(zstart, (size_t)length), &prof, &plen, &zerr) != VS_OK)
            return -1;
        free(prof);
        return CH_DATA;
    }
    if (!strcmp(cid, "acTL")) {
        READ_BODY();
        if (length < 8) { bad(s, "truncated acTL chunk (%llu bytes)", cid, length); return -1; }
        uint32_t n = be32(p);
        if (s->n_frames >= 0) s->n_frames = -1;          /* a second acTL: not an APNG */
        else if (n != 0 && n <= 0x80000000u) s->n_frames = n;
        return CH_DATA;
    }
    if (!strcmp(cid, "fcTL")) {
        READ_BODY();
        if (length < 26) { bad(s, "truncated fcTL chunk (%llu bytes)", cid, length); return -1; }
        uint32_t seq = be32(p);
        if ((s->seq < 0 && seq != 0) || (s->seq >= 0 && (uint64_t)s->seq + 1 != seq)) {
            bad(s, "APNG frame sequence error (sequence number %llu)", cid, seq);
            return -1;
        }
        s->seq = seq;
        uint64_t fw = be32(p + 4), fh = be32(p + 8), px = be32(p + 12), py = be32(p + 16);
        if (px + fw > s->w || py + fh > s->h) {
            bad(s, "APNG frame outside the image (x+width = %llu)", cid, px + fw);
            return -1;
        }
        s->have_bbox = 1;
        s->bbox[0] = px; s->bbox[1] = py; s->bbox[2] = px + fw; s->bbox[3] = py + fh;
        return CH_DATA;
    }
    if (!strcmp(cid, "fdAT")) {
        if (length < 4) { bad(s, "truncated fdAT chunk (%llu bytes)", cid, length); return -1; }
        if (safe_read(s, cid, 4, &p) != VS_OK) return -1;
        uint32_t seq = be32(p);
        if (s->seq < 0 || (uint64_t)s->seq + 1 != seq) {
            bad(s, "APNG frame sequence error (sequence number %llu)", cid, seq);
            return -1;
        }
        s->seq = seq;
        if (s->n_frames >= 0 && !s->have_bbox) s->default_image = 1;
        /* As for IDAT; the caller then skips `length` bytes from here,
         * 4 bytes past the chunk data, exactly as Pillow does. */
        if (!s->mi) return CH_UNKNOWN;
        *idat_len = length - 4;
        return CH_IMAGE;
    }
#undef READ_BODY
    return CH_UNKNOWN;
}

/* ------------------------------------------------------------------------ */
/* Row decoder (ZipDecode)                                                  */
/* ------------------------------------------------------------------------ */

static const int adam7_off[7] = {7, 3, 3, 1, 1, 0, 0};
static const int adam7_col0[7] = {0, 4, 0, 2, 0, 1, 0};
static const int adam7_row0[7] = {0, 0, 4, 0, 2, 0, 1};
static const int adam7_dcol[7] = {8, 8, 4, 4, 2, 2, 1};
static const int adam7_drow[7] = {8, 8, 8, 4, 4, 2, 2};

enum { ZD_OK = 0, ZD_BROKEN = -2, ZD_UNKNOWN = -3, ZD_CONFIG = -8, ZD_MEMORY = -9 };

struct zipdec {
    z_stream zs;
    const struct png_modeinfo *mi;
    size_t bytes;                /* bytes of a full-width row (no filter byte) */
    uint8_t *buf, *prev;         /* [bytes + 1]: filter byte, then row bytes */
    size_t last_output;
    int interlaced, pass;
    int64_t y, xsize, ysize, xoff, yoff;
    uint8_t *plane;              /* W x H x channels, zero-initialised */
    size_t plane_w;
    int errcode;
};

/* Unpacks pixel k of a (defiltered) row into the plane at pixel dst. */
static void put_pixel(const struct zipdec *z, const uint8_t *row, size_t k, uint8_t *dst)
{
    unsigned v;
    switch (z->mi->raw) {
    case PR_1: dst[0] = ((row[k >> 3] >> (7 - (k & 7))) & 1) ? 255 : 0; break;
    case PR_L2: dst[0] = (uint8_t)(((row[k >> 2] >> (6 - 2 * (k & 3))) & 3) * 85); break;
    case PR_L4: dst[0] = (uint8_t)(((row[k >> 1] >> ((k & 1) ? 0 : 4)) & 15) * 17); break;
    case PR_P1: dst[0] = (row[k >> 3] >> (7 - (k & 7))) & 1; break;
    case PR_P2: dst[0] = (row[k >> 2] >> (6 - 2 * (k & 3))) & 3; break;
    case PR_P4: dst[0] = (row[k >> 1] >> ((k & 1) ? 0 : 4)) & 15; break;
    case PR_L: case PR_P: dst[0] = row[k]; break;
    case PR_I16B: v = be16(row + 2 * k); dst[0] = (uint8_t)(v > 255 ? 255 : v); break;  /* I -> L clamps */
    case PR_LA: dst[0] = row[2 * k]; break;
    case PR_LA16B: dst[0] = row[4 * k]; break;                                         /* high byte of L */
    case PR_RGB: memcpy(dst, row + 3 * k, 3); break;
    case PR_RGBA: memcpy(dst, row + 4 * k, 3); break;
    case PR_RGB16B: case PR_RGBA16B: {
        const uint8_t *q = row + (z->mi->raw == PR_RGB16B ? 6 : 8) * k;
        dst[0] = q[0]; dst[1] = q[2]; dst[2] = q[4];
        break;
    }
    }
}

static size_t pass_row_len(const struct zipdec *z, int pass)
{
    uint64_t n = (uint64_t)(z->xsize + adam7_off[pass]) / (uint64_t)adam7_dcol[pass];
    return (size_t)((n * z->mi->bits + 7) / 8);
}

/* PNG filters on buf[1..row_len] with the previous row prev[1..row_len];
 * bpp = bytes per complete pixel (at least 1). */
static int unfilter(uint8_t *buf, const uint8_t *prev, size_t row_len, size_t bpp)
{
    size_t i;
    switch (buf[0]) {
    case 0: break;
    case 1: for (i = bpp + 1; i <= row_len; i++) buf[i] += buf[i - bpp]; break;
    case 2: for (i = 1; i <= row_len; i++) buf[i] += prev[i]; break;
    case 3:
        for (i = 1; i <= bpp && i <= row_len; i++) buf[i] += prev[i] / 2;
        for (; i <= row_len; i++) buf[i] += (uint8_t)((buf[i - bpp] + prev[i]) / 2);
        break;
    case 4:
        for (i = 1; i <= bpp && i <= row_len; i++) buf[i] += prev[i];
        for (; i <= row_len; i++) {
            int a = buf[i - bpp], b = prev[i], c = prev[i - bpp];
            int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
            buf[i] += (uint8_t)((pa <= pb && pa <= pc) ? a : (pb <= pc) ? b : c);
        }
        break;
    default: return -1;
    }
    return 0;
}

/* One decode() call: inflates `n` bytes of IDAT data.  Returns 0 when it
 * wants more, 1 when finished (z->errcode says how). */
static int zip_feed(struct zipdec *z, const uint8_t *in, size_t n)
{
    const size_t ch = z->mi->channels;
    const size_t bpp = (z->mi->bits + 7) / 8;
    size_t row_len = z->interlaced ? pass_row_len(z, z->pass) : z->bytes;
    z->zs.next_in = (Bytef *)(uintptr_t)in;
    z->zs.avail_in = (uInt)n;
    while (z->zs.avail_in > 0) {
        z->zs.next_out = z->buf + z->last_output;
        z->zs.avail_out = (uInt)(row_len + 1 - z->last_output);
        int r = inflate(&z->zs, Z_NO_FLUSH);
        if (r < 0) {
            z->errcode = r == Z_DATA_ERROR ? ZD_BROKEN : r == Z_MEM_ERROR ? ZD_MEMORY : ZD_CONFIG;
            return 1;
        }
        size_t got = row_len + 1 - z->zs.avail_out;
        if (got < row_len + 1) { z->last_output = got; break; }
        if (unfilter(z->buf, z->prev, row_len, bpp) < 0) { z->errcode = ZD_UNKNOWN; return 1; }
        if (z->interlaced) {
            /* Pillow writes interlaced pixels at (col, y), ignoring the tile offset. */
            size_t npix = (size_t)((uint64_t)(z->xsize + adam7_off[z->pass]) / (uint64_t)adam7_dcol[z->pass]);
            size_t col = (size_t)adam7_col0[z->pass];
            for (size_t k = 0; k < npix; k++, col += (size_t)adam7_dcol[z->pass])
                put_pixel(z, z->buf + 1, k, z->plane + ((size_t)z->y * z->plane_w + col) * ch);
            z->y += adam7_drow[z->pass];
            while (z->y >= z->ysize || row_len == 0) {
                z->pass++;
                if (z->pass == 7) { z->y = z->ysize; break; }
                z->y = adam7_row0[z->pass];
                row_len = pass_row_len(z, z->pass);
                memset(z->buf, 0, z->bytes + 1);          /* first row of a pass: black above */
            }
        } else {
            uint8_t *dst = z->plane + ((size_t)(z->y + z->yoff) * z->plane_w + (size_t)z->xoff) * ch;
            for (size_t k = 0; k < (size_t)z->xsize; k++) put_pixel(z, z->buf + 1, k, dst + k * ch);
            z->y++;
        }
        z->last_output = 0;
        if (z->y >= z->ysize || r == Z_STREAM_END) { z->errcode = ZD_OK; return 1; }
        uint8_t *t = z->buf; z->buf = z->prev; z->prev = t;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The decoder                                                              */
/* ------------------------------------------------------------------------ */

/* bytes.fromhex("".join(text.split("\n")[3:])): ImageMagick's raw profile
 * (a header line, a name line, a length line, then hex).  -1 on a
 * non-hex character (Python raises ValueError). */
static int raw_profile_decode(const char *t, size_t n, uint8_t **out, size_t *outlen)
{
    size_t i = 0;
    for (int lines = 0; lines < 3; lines++) {
        while (i < n && t[i] != '\n') i++;
        if (i >= n) { *out = NULL; *outlen = 0; return 0; }
        i++;
    }
    uint8_t *b = malloc((n - i) / 2 + 1);
    if (!b) return -2;
    size_t o = 0;
    while (i < n) {
        char c = t[i];
        if (c == '\n') { i++; continue; }                   /* the join removed newlines */
        if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') { i++; continue; }
        /* A pair: two hex digits, newlines between them removed by join. */
        int hv[2];
        for (int k = 0; k < 2; k++) {
            while (k == 1 && i < n && t[i] == '\n') i++;
            if (i >= n) { free(b); return -1; }
            c = t[i++];
            if (c >= '0' && c <= '9') hv[k] = c - '0';
            else if (c >= 'a' && c <= 'f') hv[k] = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') hv[k] = c - 'A' + 10;
            else { free(b); return -1; }
        }
        b[o++] = (uint8_t)(hv[0] << 4 | hv[1]);
    }
    *out = b;
    *outlen = o;
    return 0;
}

struct png_meta {
    uint8_t *exif;
    size_t exif_len;
    int xmp;
};

/* Snapshot of what getexif() would see if called now. */
static enum vs_status meta_snapshot(const struct png *s, struct png_meta *m, struct vs_err *err)
{
    memset(m, 0, sizeof *m);
    m->xmp = s->xmp_orient > 0 ? s->xmp_orient : 0;
    if (s->exif) {
        m->exif = malloc(s->exif_len + 1);
        if (!m->exif) return vs_err_set(err, VS_NOMEM, "PNG: out of memory for EXIF");
        memcpy(m->exif, s->exif, s->exif_len);
        m->exif_len = s->exif_len;
    } else if (s->raw_profile) {
        int r = raw_profile_decode(s->raw_profile, s->raw_profile_len, &m->exif, &m->exif_len);
        if (r == -2) return vs_err_set(err, VS_NOMEM, "PNG: out of memory for EXIF");
        if (r < 0)
            return vs_err_set(err, VS_BAD_INPUT,
                              "PNG: text chunk \"Raw profile type exif\" holds a non-hex character");
    }
    return VS_OK;
}

static void png_free(struct png *s)
{
    free(s->exif);
    free(s->raw_profile);
    s->exif = NULL;
    s->raw_profile = NULL;
}

/* PngImageFile.load_read(): the next piece of image data.  Returns 0 with
 * *p and *n (n may be 0 at the end of the file), 1 when the next chunk is not
 * image data (Pillow returns b"" there), or -1 on a broken chunk. */
static int next_piece(struct png *s, uint64_t *idat_left, const uint8_t **p, size_t *n)
{
    while (*idat_left == 0) {
        png_skip(s, 4);                                   /* CRC, not checked */
        char cid[5];
        uint32_t length;
        if (chunk_header(s, cid, &length) < 0) {
            bad(s, "image file is truncated (broken chunk header at offset %llu)", NULL, s->pos);
            return -1;
        }
        if (strcmp(cid, "IDAT") && strcmp(cid, "DDAT") && strcmp(cid, "fdAT")) return 1;
        if (!strcmp(cid, "fdAT")) {
            const uint8_t *dd;
            uint64_t il;
            if (chunk_call(s, cid, length, &dd, &il) < 0) return -1;
            *idat_left = length - 4;
        } else {
            *idat_left = length;
        }
    }
    uint64_t want = VS_MIN((uint64_t)PNG_READ_BLOCK, *idat_left);
    *idat_left -= want;
    size_t a = png_avail(s);
    *n = want < a ? (size_t)want : a;
    *p = s->d + s->pos;
    s->pos += *n;
    return 0;
}

enum vs_status vs_decode_png(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err)
{
    struct png s;
    memset(&s, 0, sizeof s);
    s.d = data;
    s.len = len;
    s.n_frames = -1;
    s.seq = -1;
    s.xmp_orient = -1;
    struct vs_err local_err;
    if (!err) err = &local_err;
    s.err = err;
    enum vs_status st = VS_OK;
    struct png_meta pre, post;
    memset(&pre, 0, sizeof pre);
    memset(&post, 0, sizeof post);
    uint8_t *plane = NULL;
    struct zipdec z;
    memset(&z, 0, sizeof z);
    int z_inited = 0;

    if (len < 8 || memcmp(data, "\x89PNG\r\n\x1a\n", 8) != 0)
        return vs_err_set(err, VS_BAD_INPUT, "PNG: signature missing");
    s.pos = 8;

    /* ---- open: chunks up to the image data ---- */
    char cid[5];
    uint32_t length = 0;
    uint64_t idat_left = 0;
    int kind;
    for (;;) {
        if (chunk_header(&s, cid, &length) < 0) {
            st = vs_err_set(err, VS_BAD_INPUT, "PNG: cannot identify image file (broken chunk header at offset %zu)",
                            s.pos);
            goto fail;
        }
        const uint8_t *body;
        uint64_t il = 0;
        kind = chunk_call(&s, cid, length, &body, &il);
        if (kind < 0) { st = err->status; goto fail; }
        if (kind == CH_IMAGE) { idat_left = il; break; }
        if (kind == CH_END) break;
        if (kind == CH_UNKNOWN) {
            if (safe_read(&s, cid, length, &body) != VS_OK) { st = VS_BAD_INPUT; goto fail; }
        }
        /* Every chunk read while opening has its CRC checked. */
        if (png_avail(&s) < 4) {
            st = vs_err_set(err, VS_BAD_INPUT, "PNG: cannot identify image file (chunk %s: CRC cut short)", cid);
            goto fail;
        }
        uLong crc = crc32(0L, (const Bytef *)cid, 4);
        if (length) crc = crc32(crc, body, length);
        if ((uint32_t)crc != be32(data + s.pos)) {
            st = vs_err_set(err, VS_BAD_INPUT,
                            "PNG: cannot identify image file (chunk %s: CRC %08x, computed %08x)", cid,
                            be32(data + s.pos), (uint32_t)crc);
            goto fail;
        }
        s.pos += 4;
    }
    const struct png_modeinfo *mi = s.mi;
    if (!mi || s.w == 0 || s.h == 0) {
        st = vs_err_set(err, VS_BAD_INPUT, "PNG: cannot identify image file (%s)",
                        !mi ? "no IHDR with a supported bit depth/colour type" : "zero width or height");
        goto fail;
    }
    st = vs_decode_check_pixels("PNG", s.w, s.h, lim, err);
    if (st != VS_OK) goto fail;
    if (s.w > INT32_MAX || s.h > INT32_MAX) {
        st = vs_err_set(err, VS_TOO_LARGE, "PNG: dimensions %llux%llu out of range",
                        (unsigned long long)s.w, (unsigned long long)s.h);
        goto fail;
    }
    int animated = s.n_frames >= 0 && s.n_frames + s.default_image > 1;
    /* getexif() reads info["exif"] without loading when opening found
     * one; the XMP it may fall back to is then also the opening's. */
    int pre_has_exif = s.exif != NULL;
    if (pre_has_exif) {
        st = meta_snapshot(&s, &pre, err);
        if (st != VS_OK) goto fail;
    }
    if (kind != CH_IMAGE) {
        st = vs_err_set(err, VS_BAD_INPUT, "PNG: cannot load this image (no image data before IEND)");
        goto fail;
    }

    /* ---- load: decode the tile ---- */
    size_t W = (size_t)s.w, H = (size_t)s.h, npx = W * H, rgb_len;
    if (!vs_mul_size(npx, 3, &rgb_len)) {
        st = vs_err_set(err, VS_TOO_LARGE, "PNG: %zux%zu too large", W, H);
        goto fail;
    }
    z.mi = mi;
    z.interlaced = s.interlace;
    if (s.have_bbox && !(s.bbox[0] == 0 && s.bbox[2] == 0)) {
        z.xoff = (int64_t)s.bbox[0]; z.yoff = (int64_t)s.bbox[1];
        z.xsize = (int64_t)(s.bbox[2] - s.bbox[0]); z.ysize = (int64_t)(s.bbox[3] - s.bbox[1]);
    } else {
        z.xsize = (int64_t)W; z.ysize = (int64_t)H;
    }
    if (z.xsize <= 0 || z.ysize <= 0 || (uint64_t)(z.xsize + z.xoff) > W || (uint64_t)(z.ysize + z.yoff) > H) {
        st = vs_err_set(err, VS_BAD_INPUT, "PNG: APNG frame tile outside the image");
        goto fail;
    }
    z.bytes = (size_t)(((uint64_t)z.xsize * mi->bits + 7) / 8);
    /* One zeroed buffer of W*H*3 bytes: an RGB plane is decoded straight
     * into it; a one-channel plane (grey, index) lives in its last third
     * and is expanded in place afterwards, so the peak stays at 3 bytes
     * per pixel. */
    plane = calloc(rgb_len ? rgb_len : 1, 1);
    z.buf = calloc(z.bytes + 1, 1);
    z.prev = calloc(z.bytes + 1, 1);
    if (!plane || !z.buf || !z.prev) {
        st = vs_err_set(err, VS_NOMEM, "PNG: out of memory for %zux%zu pixels", W, H);
        goto fail;
    }
    z.plane = mi->channels == 3 ? plane : plane + 2 * npx;
    z.plane_w = W;
    if (inflateInit(&z.zs) != Z_OK) {
        st = vs_err_set(err, VS_NOMEM, "PNG: zlib initialisation failed");
        goto fail;
    }
    z_inited = 1;
    for (;;) {
        const uint8_t *piece;
        size_t n = 0;
        int r = next_piece(&s, &idat_left, &piece, &n);
        if (r < 0) { st = VS_BAD_INPUT; goto fail; }
        if (r > 0 || n == 0) {
            st = vs_err_set(err, VS_BAD_INPUT,
                            "PNG: image file is truncated (image data ends after row %lld of %lld)",
                            (long long)z.y, (long long)z.ysize);
            goto fail;
        }
        if (zip_feed(&z, piece, n)) break;
    }
    if (z.errcode != ZD_OK) {
        st = vs_err_set(err, VS_BAD_INPUT, "PNG: %s when reading image data",
                        z.errcode == ZD_BROKEN ? "broken data stream (zlib error)" :
                        z.errcode == ZD_UNKNOWN ? "unrecognized data stream contents (bad filter type)" :
                        z.errcode == ZD_MEMORY ? "out of memory" : "bad zlib configuration");
        goto fail;
    }
    inflateEnd(&z.zs);
    z_inited = 0;

    /* ---- load_end: the chunks after the image ---- */
    s.after_idat = 1;
    png_skip(&s, idat_left);
    for (;;) {
        png_skip(&s, 4);                                  /* CRC, not checked here */
        uint32_t l2;
        if (chunk_header(&s, cid, &l2) < 0) break;
        if (!strcmp(cid, "IEND")) break;
        if (!strcmp(cid, "fcTL") && animated) break;
        const uint8_t *body;
        uint64_t il = 0;
        kind = chunk_call(&s, cid, l2, &body, &il);
        if (kind < 0) { st = err->status; goto fail; }
        if (kind == CH_IMAGE || kind == CH_UNKNOWN) {
            if (safe_read(&s, cid, kind == CH_IMAGE ? il : l2, &body) != VS_OK) { st = VS_BAD_INPUT; goto fail; }
        }
    }

    /* Image.load realizes a PLTE taken while the mode was "P" (a later
     * IHDR may have changed the mode): more than 256 entries fails; an
     * "L"/"LA" image becomes "P"/"PA" and its values go through the
     * palette; any other mode refuses a palette. */
    int use_plte = 0;
    if (s.plte) {
        if (s.plte_len * 8 / 24 > 256) {
            st = vs_err_set(err, VS_BAD_INPUT, "PNG: PLTE of %zu bytes (invalid palette size)", s.plte_len);
            goto fail;
        }
        if (strcmp(mi->mode, "P") && strcmp(mi->mode, "L") && strcmp(mi->mode, "LA")) {
            st = vs_err_set(err, VS_BAD_INPUT, "PNG: PLTE for a %s image (illegal image mode)", mi->mode);
            goto fail;
        }
        use_plte = 1;
    }

    /* getexif(): the EXIF seen while opening wins; otherwise the state
     * after load (eXIf/"exif" text, else the raw profile), and XMP. */
    if (pre_has_exif) {
        /* If that EXIF (or the opening's XMP) rotates the image,
         * exif_transpose parses the loaded image's info["exif"] (or raw
         * profile) once more; a header Pillow refuses there fails too. */
        const uint8_t *t = pre.exif;
        size_t tl = pre.exif_len;
        if (tl >= 6 && memcmp(t, "Exif\0\0", 6) == 0) { t += 6; tl -= 6; }
        struct vs_tiff_entry te;
        int orient = vs_tiff_ifd0_find(t, tl, 0x0112, &te) ? vs_exif_orientation(pre.exif, pre.exif_len)
                                                           : pre.xmp;
        if (orient >= 2 && orient <= 8) {
            st = meta_snapshot(&s, &post, err);
            if (st == VS_OK && vs_exif_check_header(post.exif, post.exif_len) != VS_EXIF_OK)
                st = vs_err_set(err, VS_BAD_INPUT,
                                "PNG: the EXIF block after the image data is not a readable TIFF header");
            free(post.exif);
            memset(&post, 0, sizeof post);
            if (st != VS_OK) goto fail;
        }
        post = pre;
        memset(&pre, 0, sizeof pre);
    } else {
        st = meta_snapshot(&s, &post, err);
        if (st != VS_OK) goto fail;
    }

    /* ---- plane -> RGB ---- */
    uint8_t *rgb = plane;
    plane = NULL;
    if (mi->channels == 1) {
        /* In place, front to back: pixel i is read at 2*npx + i before
         * bytes 3i..3i+2 are written, and every earlier write ends at
         * 3i - 1 < 2*npx + i. */
        const uint8_t *src = rgb + 2 * npx;
        uint8_t lut[256][3];
        for (int i = 0; i < 256; i++) lut[i][0] = lut[i][1] = lut[i][2] = (uint8_t)i;
        if (use_plte)
            for (size_t i = 0; i < 256 && 3 * i + 3 <= s.plte_len; i++) memcpy(lut[i], s.plte + 3 * i, 3);
        for (size_t i = 0; i < npx; i++) {
            const uint8_t *c = lut[src[i]];
            uint8_t *d = rgb + 3 * i;
            d[0] = c[0]; d[1] = c[1]; d[2] = c[2];
        }
    }
    free(z.buf);
    free(z.prev);
    free(pre.exif);
    png_free(&s);
    out->width = (int)W;
    out->height = (int)H;
    out->rgb = rgb;
    snprintf(out->mode, sizeof out->mode, "%s", mi->mode);
    out->exif = post.exif;
    out->exif_len = post.exif_len;
    out->xmp_orientation = post.xmp;
    return VS_OK;

fail:
    if (z_inited) inflateEnd(&z.zs);
    free(z.buf);
    free(z.prev);
    free(plane);
    free(pre.exif);
    free(post.exif);
    png_free(&s);
    if (st == VS_OK) st = VS_BAD_INPUT;
    return st;
}
