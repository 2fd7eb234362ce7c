/* decode_gif.c: the first frame of a GIF to RGB8, as Pillow 9.4 reads it.
 *
 * Pillow reads GIF with its own parser and LZW decoder (GifImagePlugin.py,
 * libImaging/GifDecode.c), not giflib, and its verdicts on broken files come
 * from those two, so this file reproduces their behaviour:
 *   - header + logical screen; a colour table whose entries i are all
 *     (i,i,i) is "not needed" and dropped; a table cut inside an entry, an
 *     extension missing its bytes or a missing image descriptor are
 *     Pillow's "cannot identify image file".
 *   - frame 0 is drawn on a canvas of the screen size, grown to hold the
 *     frame if the descriptor reaches past it; the canvas starts as the
 *     transparent index (GCE) or 0; pixels are palette indices.
 *   - mode "P" when the frame has a needed colour table (local, else
 *     global), else "L"; the RGB comes from the local table, else the
 *     global one (Pillow realizes the global palette even on an "L" frame
 *     whose local table is the identity), else grey; indices past the
 *     table's end are Pillow's grey ramp (i,i,i).
 *   - LZW data is fed exactly as ImageFile.load feeds it (64 KiB reads);
 *     the decoder stops with success as soon as the last row is written;
 *     it needs whole sub-blocks; running out of file first is "image file
 *     is truncated"; an impossible code is "broken data stream".
 * The canvas size is checked against the pixel limit before any pixel
 * buffer is allocated.  Reentrant, no global state: any thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decoders.h"

#define LZW_BITS 12
#define LZW_TABLE (1 << LZW_BITS)   /* codes 0..4095 */
#define LZW_STACK (1 << LZW_BITS)   /* pending string bytes */
#define GIF_READ_BLOCK 65536        /* ImageFile.decodermaxblock */

/* Result codes of the LZW state machine (Pillow's IMAGING_CODEC_*). */
enum { LZW_OK = 0, LZW_OVERRUN = -1, LZW_BROKEN = -2, LZW_CONFIG = -8 };

/* Resumable LZW decoder writing palette indices into a W-wide canvas at
 * (xoff, yoff), xsize x ysize pixels, rows in GIF order (interlaced in
 * four passes when asked). */
struct lzw {
    int bits;                   /* LZW minimum code size from the file */
    int started, phase;         /* phase 1: reset table, 2: first code, 3: running */
    int interlace, step;        /* interlace pass 1..3 (0 = none/last) and row step */
    int clear, end, next, codesize, codemask;
    uint32_t bitbuffer;
    int bitcount, blocksize;
    int lastdata, lastcode;
    uint8_t data[LZW_TABLE];    /* last byte of each code's string */
    uint16_t link[LZW_TABLE];   /* prefix code of each code's string */
    uint8_t stack[LZW_STACK];   /* string bytes, filled from the right */
    int sp;                     /* stack[sp..] are pending output */
    int x, y, xsize, ysize, xoff, yoff;
    uint8_t *canvas;
    size_t canvas_w;
    int errcode;
};

/* Moves to the next output row; returns 1 when the frame is complete. */
static int lzw_newline(struct lzw *z)
{
    z->x = 0;
    z->y += z->step;
    while (z->y >= z->ysize) {
        switch (z->interlace) {
        case 1: z->y = 4; z->interlace = 2; break;                 /* pass 2: rows 4, 12, ... */
        case 2: z->step = 4; z->y = 2; z->interlace = 3; break;    /* pass 3: rows 2, 6, ... */
        case 3: z->step = 2; z->y = 1; z->interlace = 0; break;    /* pass 4: rows 1, 3, ... */
        default: return 1;
        }
    }
    return 0;
}

/* Feeds bytes [buf, buf+n) to the decoder.  Returns the number of bytes
 * consumed (>= 0: wants more input, or hit the end code), or -1 when done:
 * z->errcode is LZW_OK for a completed frame, < 0 for an error. */
static long lzw_decode(struct lzw *z, const uint8_t *buf, size_t n)
{
    const uint8_t *ptr = buf;
    if (!z->started) {
        if (z->bits > LZW_BITS) { z->errcode = LZW_CONFIG; return -1; }
        z->clear = 1 << z->bits;
        z->end = z->clear + 1;
        if (z->interlace) { z->interlace = 1; z->step = 8; }
        else z->step = 1;
        z->phase = 1;
        z->started = 1;
    }
    for (;;) {
        const uint8_t *p;
        int len;
        if (z->phase == 1) {
            z->next = z->clear + 2;
            z->codesize = z->bits + 1;
            z->codemask = (1 << z->codesize) - 1;
            z->sp = LZW_STACK;
            z->phase = 2;
        }
        if (z->sp < LZW_STACK) {
            /* The rest of the current string, all at once. */
            len = LZW_STACK - z->sp;
            p = &z->stack[z->sp];
            z->sp = LZW_STACK;
        } else {
            /* Next code: bits come LSB-first from sub-blocks, which are
             * only entered when the whole sub-block is available. */
            while (z->bitcount < z->codesize) {
                if (z->blocksize > 0) {
                    z->bitbuffer |= (uint32_t)*ptr++ << z->bitcount;
                    n--;
                    z->blocksize--;
                    z->bitcount += 8;
                } else {
                    if (n < 1 || n < (size_t)*ptr + 1) return (long)(ptr - buf);
                    z->blocksize = *ptr++;
                    n--;
                }
            }
            int c = (int)(z->bitbuffer & (uint32_t)z->codemask);
            z->bitbuffer >>= z->codesize;
            z->bitcount -= z->codesize;

            if (c == z->clear) {
                if (z->phase != 2) z->phase = 1;
                continue;
            }
            if (c == z->end) break;

            len = 1;
            p = (const uint8_t *)0;
            if (z->phase == 2) {
                if (c > z->clear) { z->errcode = LZW_BROKEN; return -1; }
                z->lastdata = z->lastcode = c;
                z->phase = 3;
            } else {
                int thiscode = c;
                if (c > z->next) { z->errcode = LZW_BROKEN; return -1; }
                if (c == z->next) {             /* KwKwK: string of lastcode + its first byte */
                    if (z->sp <= 0) { z->errcode = LZW_BROKEN; return -1; }
                    z->stack[--z->sp] = (uint8_t)z->lastdata;
                    c = z->lastcode;
                }
                while (c >= z->clear) {         /* unwind the string onto the stack */
                    if (z->sp <= 0 || c >= LZW_TABLE) { z->errcode = LZW_BROKEN; return -1; }
                    z->stack[--z->sp] = z->data[c];
                    c = z->link[c];
                }
                z->lastdata = c;
                if (z->next < LZW_TABLE) {      /* add a code while the table has room */
                    z->data[z->next] = (uint8_t)c;
                    z->link[z->next] = (uint16_t)z->lastcode;
                    if (z->next == z->codemask && z->codesize < LZW_BITS) {
                        z->codesize++;
                        z->codemask = (1 << z->codesize) - 1;
                    }
                    z->next++;
                }
                z->lastcode = thiscode;
            }
        }
        if (z->y >= z->ysize) { z->errcode = LZW_OVERRUN; return -1; }
        /* Copy len bytes (the first byte of a string is lastdata). */
        for (int i = 0; i < len; i++) {
            uint8_t v = p ? p[i] : (uint8_t)z->lastdata;
            z->canvas[(size_t)(z->y + z->yoff) * z->canvas_w + (size_t)(z->xoff + z->x)] = v;
            if (++z->x >= z->xsize && lzw_newline(z)) { z->errcode = LZW_OK; return -1; }
        }
    }
    return (long)(ptr - buf);
}

/* Python-like reads over the file: short at the end, never failing. */
struct gif_in {
    const uint8_t *d;
    size_t len, pos;
};

static size_t gin_read(struct gif_in *in, size_t n, const uint8_t **p)
{
    size_t avail = in->pos < in->len ? in->len - in->pos : 0;
    if (n > avail) n = avail;
    *p = in->d + in->pos;
    in->pos += n;
    return n;
}

/* GifImageFile.data(): a sub-block.  Returns -1 for None (EOF or the 0
 * terminator), else the bytes actually read (maybe fewer than declared). */
static long gin_block(struct gif_in *in, const uint8_t **p)
{
    const uint8_t *s;
    if (gin_read(in, 1, &s) < 1 || s[0] == 0) return -1;
    return (long)gin_read(in, s[0], p);
}

/* _is_palette_needed() with Python's short-circuit: returns 1 needed,
 * 0 identity, -1 when it indexes past a table cut inside an entry. */
static int palette_needed(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned e = (unsigned)(i / 3);             /* entry number, <= 255 */
        for (size_t k = 0; k < 3; k++) {
            if (i + k >= n) return -1;
            if (p[i + k] != e) return 1;
        }
    }
    return 0;
}

static enum vs_status unidentified(struct vs_err *err, const char *what)
{
    return vs_err_set(err, VS_BAD_INPUT, "GIF: cannot identify image file (%s)", what);
}

enum vs_status vs_decode_gif(const uint8_t *data, size_t len,
                             const struct vs_image_limits *lim,
                             struct vs_decoded *out, struct vs_err *err)
{
    struct gif_in in = {data, len, 0};
    if (len < 13 || (memcmp(data, "GIF87a", 6) != 0 && memcmp(data, "GIF89a", 6) != 0))
        return unidentified(err, "header cut short");
    uint64_t W = data[6] | data[7] << 8, H = data[8] | data[9] << 8;
    unsigned flags = data[10];
    in.pos = 13;

    const uint8_t *gpal = NULL, *lpal = NULL;
    size_t gpal_len = 0, lpal_len = 0;
    int lpal_state = 0;         /* 0: no local table, 1: needed, 2: identity */
    if (flags & 128) {
        const uint8_t *p;
        size_t n = gin_read(&in, (size_t)3 << ((flags & 7) + 1), &p);
        int need = palette_needed(p, n);
        if (need < 0) return unidentified(err, "global colour table cut short");
        if (need) { gpal = p; gpal_len = n; }
    }

    /* ---- blocks up to the first image descriptor ---- */
    int transparency = -1, found = 0, interlaced = 0, codebits = 0;
    uint64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    size_t lzw_offset = 0;
    const uint8_t *s;
    if (gin_read(&in, 1, &s) < 1 || s[0] == ';') return unidentified(err, "no image in file");
    int have = 1;
    unsigned sc = s[0];
    for (;;) {
        if (!have) {
            if (gin_read(&in, 1, &s) < 1) break;
            sc = s[0];
        }
        have = 0;
        if (sc == ';') break;
        if (sc == '!') {
            const uint8_t *lab, *blk;
            size_t nl = gin_read(&in, 1, &lab);
            long nb = gin_block(&in, &blk);
            if (nl < 1) return unidentified(err, "extension label missing");
            if (lab[0] == 249) {                   /* graphic control extension */
                if (nb < 0) return unidentified(err, "empty graphic control extension");
                if (nb < 1 || ((blk[0] & 1) && nb < 4) || nb < 3)
                    return unidentified(err, "graphic control extension cut short");
                if (blk[0] & 1) transparency = blk[3];
            } else if (lab[0] == 254) {            /* comment: its loop eats the terminator */
                while (nb > 0) nb = gin_block(&in, &blk);
                continue;
            } else if (lab[0] == 255) {            /* application extension */
                if (nb < 0) return unidentified(err, "empty application extension");
                if (nb >= 11 && memcmp(blk, "NETSCAPE2.0", 11) == 0) {
                    nb = gin_block(&in, &blk);
                    if (nb < 0) return unidentified(err, "NETSCAPE2.0 extension without data");
                }
            }
            while (gin_block(&in, &blk) > 0) {}
        } else if (sc == ',') {                    /* image descriptor */
            const uint8_t *d;
            if (gin_read(&in, 9, &d) < 9) return unidentified(err, "image descriptor cut short");
            x0 = d[0] | d[1] << 8;
            y0 = d[2] | d[3] << 8;
            x1 = x0 + (d[4] | d[5] << 8);
            y1 = y0 + (d[6] | d[7] << 8);
            if (x1 > W || y1 > H) {                /* Pillow grows the canvas */
                W = VS_MAX(W, x1);
                H = VS_MAX(H, y1);
            }
            interlaced = (d[8] & 64) != 0;
            if (d[8] & 128) {
                const uint8_t *p;
                size_t n = gin_read(&in, (size_t)3 << ((d[8] & 7) + 1), &p);
                int need = palette_needed(p, n);
                if (need < 0) return unidentified(err, "local colour table cut short");
                lpal_state = need ? 1 : 2;
                if (need) { lpal = p; lpal_len = n; }
            }
            if (gin_read(&in, 1, &s) < 1) return unidentified(err, "LZW code size missing");
            codebits = s[0];
            lzw_offset = in.pos;
            found = 1;
            break;
        }
    }
    if (!found) return unidentified(err, "no image descriptor");
    if (W == 0 || H == 0) return unidentified(err, "empty logical screen");
    enum vs_status st = vs_decode_check_pixels("GIF", W, H, lim, err);
    if (st != VS_OK) return st;

    /* Mode and the palette the RGB comes from. */
    int mode_p = lpal_state == 1 || (lpal_state == 0 && gpal);
    const uint8_t *pal = lpal_state == 1 ? lpal : gpal;
    size_t pal_len = lpal_state == 1 ? lpal_len : gpal_len;

    /* The decoded tile: (x0,y0)-(x1,y1), or the whole canvas when both x
     * are 0 (Pillow's setimage convention); an empty tile is an error. */
    int xsize, ysize, xoff = 0, yoff = 0;
    if (x0 == 0 && x1 == 0) {
        xsize = (int)W; ysize = (int)H;
    } else {
        xoff = (int)x0; yoff = (int)y0;
        xsize = (int)(x1 - x0); ysize = (int)(y1 - y0);
    }
    if (xsize <= 0 || ysize <= 0)
        return vs_err_set(err, VS_BAD_INPUT, "GIF: empty frame %dx%d at (%d,%d)", xsize, ysize, xoff, yoff);

    size_t npx = (size_t)W * (size_t)H, rgb_len;
    if (!vs_mul_size(npx, 3, &rgb_len))
        return vs_err_set(err, VS_TOO_LARGE, "GIF: canvas %llux%llu too large",
                          (unsigned long long)W, (unsigned long long)H);
    /* The index canvas lives in the last third of the RGB buffer and is
     * expanded in place at the end: 3 bytes per pixel at the peak. */
    struct lzw *z = calloc(1, sizeof *z);
    uint8_t *rgb = malloc(rgb_len);
    if (!z || !rgb) {
        free(z); free(rgb);
        return vs_err_set(err, VS_NOMEM, "GIF: out of memory for a %llux%llu canvas",
                          (unsigned long long)W, (unsigned long long)H);
    }
    uint8_t *canvas = rgb + 2 * npx;
    memset(canvas, transparency >= 0 ? transparency : 0, npx);
    z->bits = codebits;
    z->interlace = interlaced;
    z->xsize = xsize; z->ysize = ysize; z->xoff = xoff; z->yoff = yoff;
    z->canvas = canvas;
    z->canvas_w = (size_t)W;

    /* ImageFile.load: read 64 KiB at a time from the LZW offset; keep what
     * the decoder did not consume in front of the next read. */
    size_t bstart = lzw_offset, rpos = lzw_offset;
    long r;
    for (;;) {
        size_t chunk = rpos < len ? VS_MIN((size_t)GIF_READ_BLOCK, len - rpos) : 0;
        if (chunk == 0) {
            st = vs_err_set(err, VS_BAD_INPUT,
                            "GIF: image file is truncated (LZW data ends before the frame is complete)");
            break;
        }
        rpos += chunk;
        r = lzw_decode(z, data + bstart, rpos - bstart);
        if (r < 0) {
            if (z->errcode != LZW_OK)
                st = vs_err_set(err, VS_BAD_INPUT, "GIF: %s in the LZW data of frame 0",
                                z->errcode == LZW_CONFIG ? "bad LZW code size" :
                                z->errcode == LZW_OVERRUN ? "image buffer overrun" :
                                "broken data stream");
            break;
        }
        bstart += (size_t)r;
    }
    free(z);
    if (st != VS_OK) { free(rgb); return st; }

    /* Index -> RGB: the table's entries, then the grey ramp. */
    uint8_t lut[256][3];
    for (int i = 0; i < 256; i++) {
        if (pal && (size_t)i * 3 + 3 <= pal_len) memcpy(lut[i], pal + 3 * i, 3);
        else lut[i][0] = lut[i][1] = lut[i][2] = (uint8_t)i;
    }
    /* Front to back: index i (at 2*npx + i) is read before bytes
     * 3i..3i+2 are written; earlier writes end at 3i - 1 < 2*npx + i. */
    for (size_t i = 0; i < npx; i++) {
        const uint8_t *c = lut[canvas[i]];
        uint8_t *d = rgb + 3 * i;
        d[0] = c[0]; d[1] = c[1]; d[2] = c[2];
    }

    out->width = (int)W;
    out->height = (int)H;
    out->rgb = rgb;
    snprintf(out->mode, sizeof out->mode, "%s", mode_p ? "P" : "L");
    out->exif = NULL;
    out->exif_len = 0;
    out->xmp_orientation = 0;
    return VS_OK;
}
