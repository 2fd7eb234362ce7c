/* decode_jpeg.c: JPEG (and MPO's first frame) through libjpeg-turbo, with
 * Pillow 9.4's settings and verdicts.
 *
 * Pixels: libjpeg-turbo 2.1.5 with its defaults (JDCT_ISLOW, fancy
 * upsampling, no DCT scaling), as Pillow's JpegDecode.c uses it, so the
 * output is bit-identical.  Modes follow the SOF component count, as
 * JpegImagePlugin does: 1 -> "L", 3 -> "RGB", 4 -> "CMYK"; anything else is
 * refused.  "L" and "RGB" are decoded straight into the output buffer as
 * JCS_RGB (libjpeg replicates grey, converts YCbCr), row by row, with no
 * extra copy.  "CMYK" is decoded as JCS_CMYK one row at a time and then
 * mapped as Pillow does: it reads the samples as inverted ("CMYK;I", the
 * Adobe convention, assumed for every CMYK JPEG), then convert("RGB")
 * computes, per channel with c = 255 - stored C and k = 255 - stored K,
 *     nk = 255 - k,   R = nk - round(c * nk / 255)
 * where the rounding is Pillow's MULDIV255 (t = a*b + 128; (t + (t>>8)) >> 8).
 *
 * Verdicts (Pillow reads the file with a suspending source):
 *   - the data ends before libjpeg has produced every row (libjpeg-turbo's
 *     memory source then warns JWRN_JPEG_EOF and fakes an EOI) -> "image
 *     file is truncated", even if only the EOI marker is missing;
 *   - the data ends while jpeg_finish_decompress looks for EOI after the
 *     last row -> success (Pillow stops there as well);
 *   - any other libjpeg warning (premature end of a segment at a real
 *     marker, extraneous bytes, ...) -> success, as in Pillow;
 *   - any libjpeg error (no SOF, 12-bit, SOF3 lossless, SOF5+ hierarchical,
 *     width 0, bad tables, ...) -> VS_BAD_INPUT/VS_UNSUPPORTED with
 *     libjpeg's message; nothing is printed to stderr.
 * The EXIF block is the first APP1 starting "Exif\0" before the first SOS
 * (Pillow keeps the first); see grab_exif for the EXIF/JFIF quirks of
 * Pillow's open that make some files unidentifiable.  The SOF size is checked against the pixel
 * limit before jpeg_start_decompress allocates anything.  A progress
 * monitor caps the number of scans so that a crafted progressive file
 * cannot make the decoder spin for minutes.
 *
 * Reentrant: all state is on the stack of one call; any thread.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "decoders.h"

/* More scans than any real progressive JPEG uses (libjpeg-turbo's djpeg
 * suggests a limit of this order against crafted files). */
#define VS_JPEG_MAX_SCANS 1000

/* Error manager: libjpeg's errors longjmp back to vs_decode_jpeg with the
 * formatted message; warnings are counted, and the one that means "the
 * data ended" is remembered. */
struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int eof;                 /* JWRN_JPEG_EOF seen (memory source ran dry) */
    int too_many_scans;
    char msg[JMSG_LENGTH_MAX];
};

static void on_error_exit(j_common_ptr c)
{
    struct jerr *e = (struct jerr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_emit_message(j_common_ptr c, int level)
{
    struct jerr *e = (struct jerr *)c->err;
    if (level < 0) {
        if (c->err->msg_code == JWRN_JPEG_EOF) e->eof = 1;
        c->err->num_warnings++;
    }
}

static void on_output_message(j_common_ptr c)
{
    (void)c;   /* never print */
}

static void on_progress(j_common_ptr c)
{
    j_decompress_ptr d = (j_decompress_ptr)c;
    struct jerr *e = (struct jerr *)c->err;
    if (d->input_scan_number > VS_JPEG_MAX_SCANS) {
        e->too_many_scans = 1;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", VS_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

/* One CMYK row (stored, inverted convention) -> RGB, as Pillow's
 * "CMYK;I" unpacker followed by convert("RGB"). */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int w)
{
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        int nk = in[3];   /* 255 - k, where k = 255 - stored K */
        for (int ch = 0; ch < 3; ch++) {
            int c = 255 - in[ch];
            int t = c * nk + 128;
            out[ch] = (uint8_t)(nk - ((t + (t >> 8)) >> 8));   /* in 0..nk */
        }
    }
}

/* Everything the longjmp must not lose lives here (not in registers). */
struct jctx {
    struct jpeg_decompress_struct cinfo;
    struct jerr jerr;
    struct jpeg_progress_mgr prog;
    uint8_t *rgb;
    uint8_t *row4;
    uint8_t *exif;
    size_t exif_len;
    int created;
};

static void jctx_free(struct jctx *j)
{
    if (j->created) jpeg_destroy_decompress(&j->cinfo);
    free(j->rgb);
    free(j->row4);
    free(j->exif);
}

/* Walks the APP0/APP1 segments before the first SOS in file order, as
 * JpegImagePlugin's APP handler does at open, and copies the first APP1
 * starting "Exif\0" (5 bytes: Pillow's test; prefix kept).  Pillow also
 * loads that EXIF block at open to look for a resolution, unless a JFIF
 * APP0 with density unit 1 came first ("dpi" already known):
 *   - a TIFF prefix with a header cut short raises struct.error there,
 *     which Pillow does not catch: the file is not identified;
 *   - a block that is no TIFF at all raises SyntaxError, which it catches;
 *     the cached, empty EXIF then gives no orientation later, so the block
 *     is dropped here.
 * When "dpi" was already known, the block is kept as is and decode.c
 * rejects a bad header, as exif_transpose would raise.  A "JFIF" APP0
 * shorter than 7 bytes also raises struct.error in Pillow's handler. */
static enum vs_status grab_exif(struct jctx *j, struct vs_err *err)
{
    int dpi_known = 0;
    for (jpeg_saved_marker_ptr m = j->cinfo.marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 && m->data_length >= 4 && memcmp(m->data, "JFIF", 4) == 0) {
            if (m->data_length < 7)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "JPEG: cannot identify image: JFIF segment of %u bytes is "
                                  "too short", m->data_length);
            /* unit at byte 7, densities at 8..11 (read only if present) */
            if (m->data_length >= 12 && m->data[7] == 1) dpi_known = 1;
            continue;
        }
        if (m->marker != JPEG_APP0 + 1 || m->data_length < 5 ||
            memcmp(m->data, "Exif\0", 5) != 0)
            continue;
        if (!dpi_known) {
            enum vs_exif_header h = vs_exif_check_header(m->data, m->data_length);
            if (h == VS_EXIF_SHORT_HEADER)
                return vs_err_set(err, VS_BAD_INPUT,
                                  "JPEG: cannot identify image: EXIF TIFF header cut short "
                                  "(%u bytes)", m->data_length);
            if (h == VS_EXIF_NOT_TIFF) break;   /* swallowed by Pillow: no EXIF */
        }
        j->exif = malloc(m->data_length);
        if (!j->exif) return vs_err_set(err, VS_NOMEM, "JPEG: out of memory for EXIF");
        memcpy(j->exif, m->data, m->data_length);
        j->exif_len = m->data_length;
        break;
    }
    return VS_OK;
}

enum vs_status vs_decode_jpeg(const uint8_t *data, size_t len,
                              const struct vs_image_limits *lim,
                              struct vs_decoded *out, struct vs_err *err)
{
    if (len > ULONG_MAX)
        return vs_err_set(err, VS_TOO_LARGE, "JPEG: input of %zu bytes is too large", len);
    struct jctx *j = calloc(1, sizeof *j);
    if (!j) return vs_err_set(err, VS_NOMEM, "JPEG: out of memory");
    enum vs_status st = VS_BAD_INPUT;

    j->cinfo.err = jpeg_std_error(&j->jerr.pub);
    j->jerr.pub.error_exit = on_error_exit;
    j->jerr.pub.emit_message = on_emit_message;
    j->jerr.pub.output_message = on_output_message;
    if (setjmp(j->jerr.jb)) {
        /* A libjpeg error (or our scan cap).  If the data ran out first,
         * that is the real cause (libjpeg then trips over the fake EOI). */
        if (j->jerr.eof)
            st = vs_err_set(err, VS_BAD_INPUT, "JPEG: image file is truncated (%s)", j->jerr.msg);
        else if (j->jerr.pub.msg_code == JERR_BAD_PRECISION ||
                 j->jerr.pub.msg_code == JERR_SOF_UNSUPPORTED ||
                 j->jerr.pub.msg_code == JERR_NOT_COMPILED)
            st = vs_err_set(err, VS_UNSUPPORTED, "JPEG: unsupported variant: %s", j->jerr.msg);
        else
            st = vs_err_set(err, VS_BAD_INPUT, "JPEG: broken data stream: %s", j->jerr.msg);
        jctx_free(j);
        free(j);
        return st;
    }
    jpeg_create_decompress(&j->cinfo);
    j->created = 1;
    j->prog.progress_monitor = on_progress;
    j->cinfo.progress = &j->prog;
    jpeg_mem_src(&j->cinfo, data, (unsigned long)len);
    jpeg_save_markers(&j->cinfo, JPEG_APP0, 0xFFFF);       /* JFIF (still examined by libjpeg) */
    jpeg_save_markers(&j->cinfo, JPEG_APP0 + 1, 0xFFFF);   /* EXIF */
    jpeg_read_header(&j->cinfo, TRUE);   /* errors (no image) longjmp */
    if (j->jerr.eof) {
        st = vs_err_set(err, VS_BAD_INPUT, "JPEG: file is truncated inside the headers");
        goto fail;
    }

    struct jpeg_decompress_struct *ci = &j->cinfo;
    const char *mode;
    switch (ci->num_components) {
    case 1: mode = "L"; break;
    case 3: mode = "RGB"; break;
    case 4: mode = "CMYK"; break;
    default:
        st = vs_err_set(err, VS_BAD_INPUT, "JPEG: cannot handle %d-layer images",
                        ci->num_components);
        goto fail;
    }
    st = vs_decode_check_pixels("JPEG", ci->image_width, ci->image_height, lim, err);
    if (st != VS_OK) goto fail;
    st = grab_exif(j, err);
    if (st != VS_OK) goto fail;

    /* Pillow's decoder settings are libjpeg's defaults: ISLOW DCT, fancy
     * upsampling, scale 1/1.  Only the output colour space is chosen. */
    ci->out_color_space = ci->num_components == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    if (j->jerr.eof) {   /* multi-scan files are read whole here */
        st = vs_err_set(err, VS_BAD_INPUT, "JPEG: image file is truncated");
        goto fail;
    }
    VS_ASSERT(ci->output_width == ci->image_width && ci->output_height == ci->image_height);
    const int w = (int)ci->output_width, h = (int)ci->output_height;
    size_t n;
    if (!vs_mul_size((size_t)w * 3, (size_t)h, &n)) {
        st = vs_err_set(err, VS_TOO_LARGE, "JPEG: %dx%d image does not fit in memory", w, h);
        goto fail;
    }
    j->rgb = malloc(n);
    if (ci->num_components == 4) j->row4 = malloc((size_t)w * 4);
    if (!j->rgb || (ci->num_components == 4 && !j->row4)) {
        st = vs_err_set(err, VS_NOMEM, "JPEG: out of memory for %dx%d pixels", w, h);
        goto fail;
    }

    /* rgb: (h, w, 3) u8, filled in order; libjpeg hands out up to
     * rec_outbuf_height rows per call. */
    while (ci->output_scanline < ci->output_height) {
        JDIMENSION y = ci->output_scanline, got;
        if (j->row4) {
            JSAMPROW r = j->row4;
            got = jpeg_read_scanlines(ci, &r, 1);
            if (got == 1) cmyk_row_to_rgb(j->row4, j->rgb + (size_t)y * w * 3, w);
        } else {
            JSAMPROW rows[4];
            JDIMENSION k = 0;
            for (; k < VS_ARRAY_LEN(rows) && y + k < ci->output_height; k++)
                rows[k] = j->rgb + (size_t)(y + k) * w * 3;
            got = jpeg_read_scanlines(ci, rows, k);
        }
        if (got == 0) {   /* cannot happen with a memory source; be safe */
            st = vs_err_set(err, VS_BAD_INPUT, "JPEG: decoder stalled at row %u", y);
            goto fail;
        }
        if (j->jerr.eof) break;
    }
    if (j->jerr.eof) {
        st = vs_err_set(err, VS_BAD_INPUT,
                        "JPEG: image file is truncated (data ends before row %u of %d)",
                        ci->output_scanline, h);
        goto fail;
    }
    /* Reading on to EOI: running out of data here is fine (Pillow stops
     * once every row is out); a real error still fails. */
    jpeg_finish_decompress(ci);

    memset(out, 0, sizeof *out);
    out->width = w;
    out->height = h;
    out->rgb = j->rgb;
    j->rgb = NULL;
    snprintf(out->mode, sizeof out->mode, "%s", mode);
    out->exif = j->exif;
    out->exif_len = j->exif_len;
    j->exif = NULL;
    jctx_free(j);
    free(j);
    return VS_OK;

fail:
    jctx_free(j);
    free(j);
    return st;
}
