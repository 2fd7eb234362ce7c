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
 *     last row -> success (Pillow stops there as well); that includes the
 *     end of the 64 KiB read Pillow had made when the last row came out,
 *     so a bad marker beyond it is never seen;
 *   - any other libjpeg warning (premature end of a segment at a real
 *     marker, extraneous bytes, ...) -> success, as in Pillow;
 *   - any libjpeg error (no SOF, 12-bit, SOF3 lossless, SOF5+ hierarchical,
 *     width 0, bad tables, ...) -> VS_BAD_INPUT/VS_UNSUPPORTED with
 *     libjpeg's message; nothing is printed to stderr.
 * The EXIF block is the first APP1 starting "Exif\0" before the first SOS
 * (Pillow keeps the first).  Pillow's own marker parser runs first
 * (pillow_open below) and refuses some files libjpeg would decode.  The SOF size is checked against the pixel
 * limit before jpeg_start_decompress allocates anything.  A progress
 * monitor caps the number of scans so that a crafted progressive file
 * cannot make the decoder spin for minutes.
 *
 * Reentrant: all state is on the stack of one call; any thread.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "decoders.h"

/* Scan cap against crafted progressive files (each scan walks every block
 * of the image, so thousands of empty scans make libjpeg spin for
 * minutes; real encoders emit about 10, rarely more than 60): at most
 * 2^34 / (w*h) scans, clamped to [64, 100000]: about 2^34 block-pixels
 * of scan work, a few seconds at worst. */
#define VS_JPEG_MAX_SCANS 100000
#define VS_JPEG_MIN_SCAN_CAP 64
#define VS_JPEG_SCAN_WORK (1ull << 34)

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
    uint64_t px = (uint64_t)d->image_width * d->image_height;
    uint64_t cap = px ? VS_JPEG_SCAN_WORK / px : VS_JPEG_MAX_SCANS;
    if (cap > VS_JPEG_MAX_SCANS) cap = VS_JPEG_MAX_SCANS;
    if (cap < VS_JPEG_MIN_SCAN_CAP) cap = VS_JPEG_MIN_SCAN_CAP;
    if ((uint64_t)d->input_scan_number > cap) {
        e->too_many_scans = 1;
        snprintf(e->msg, sizeof e->msg, "more than %llu scans for a %ux%u image",
                 (unsigned long long)cap, d->image_width, d->image_height);
        longjmp(e->jb, 1);
    }
}

/* ImageFile.load's read size: Pillow hands libjpeg the file in pieces of
 * this many bytes, counted from the start of the file. */
#define VS_JPEG_READ_BLOCK 65536

/* Source callbacks for jpeg_finish_decompress: past the end of the data
 * Pillow had read when the last row came out, libjpeg suspends (Pillow's
 * source has nothing more to give and Pillow does not read on). */
static boolean suspend_fill(j_decompress_ptr c)
{
    (void)c;
    return FALSE;
}

static void suspend_skip(j_decompress_ptr c, long n)
{
    struct jpeg_source_mgr *s = c->src;
    if (n <= 0) return;
    size_t k = (size_t)n < s->bytes_in_buffer ? (size_t)n : s->bytes_in_buffer;
    s->next_input_byte += k;
    s->bytes_in_buffer -= k;
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

/* ---- Pillow's JpegImageFile._open, replayed ------------------------------
 *
 * Pillow identifies a JPEG with its own Python marker parser before libjpeg
 * sees a byte, and that parser refuses some files libjpeg would decode (and
 * reads the EXIF and MPF blocks).  pillow_open() walks the same way, from
 * the byte after "FF D8 FF", until the first SOS:
 *   - bytes other than FF between markers are skipped; FF FF is fill;
 *     FF 00 is skipped; a marker outside FFC0..FFFE is "no marker found";
 *   - SOFn, DHT, DAC, SOS, DQT, DNL, DRI, EXP, APPn and COM read a 2-byte length and
 *     that many bytes (a length < 2 reads nothing); running out of data
 *     anywhere fails (struct.error / IndexError / "Truncated File Read");
 *   - SOF: needs >= 6 bytes, precision 8, 1/3/4 components, whole
 *     3-byte component records; the last SOF gives the size and mode;
 *   - DQT: every table complete (1 + 64 or 1 + 128 bytes);
 *   - APP0 "JFIF": >= 7 bytes (version read unguarded); density unit 1
 *     with >= 12 bytes makes "dpi" known;
 *   - APP1 "Exif\0": the first one is the EXIF block; while "dpi" is not
 *     known Pillow loads it right away to look for a resolution: a TIFF
 *     header cut short raises struct.error (not caught: file not
 *     identified); a block that is no TIFF raises SyntaxError (caught;
 *     Pillow's cached, empty EXIF then has no orientation: block dropped);
 *     with ResolutionUnit present, an XResolution too short to index
 *     raises IndexError (not caught: not identified, see exif_dpi_ok);
 *     otherwise "dpi" is known afterwards;
 *   - APP2 "ICC_PROFILE\0" chunks: at the next SOF the smallest chunk
 *     (bytes order) must have a 14th byte (the chunk count);
 *   - APP2 "MPF\0": the last one is the MP index, checked by mpf_check;
 *   - APP13 "Photoshop 3.0\0": the 8BIM walk fails when a resource name
 *     length byte is missing (IndexError), otherwise stops quietly;
 *   - APP14 "Adobe": >= 7 bytes (version read unguarded).
 * Afterwards an SOF must have been seen with a non-zero size. */
struct popen {
    const uint8_t *exif;        /* first APP1 "Exif\0" payload, or NULL */
    size_t exif_len;
    const uint8_t *mp;          /* last APP2 "MPF\0" payload after the tag */
    size_t mp_len;
    int sof, layers;
    unsigned width, height;
};

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Python bytes ordering (lexicographic, a prefix sorts first): a < b? */
static int bytes_less(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c < 0 || (c == 0 && na < nb);
}

/* The APP13 Photoshop resource walk; 0 when Pillow raises IndexError. */
static int photoshop_ok(const uint8_t *s, size_t n)
{
    uint64_t off = 14;
    while (off + 4 <= n && memcmp(s + off, "8BIM", 4) == 0) {
        off += 4;
        if (off + 2 > n) return 1;                 /* struct.error: break */
        unsigned code = be16(s + off);
        off += 2;
        if (off >= n) return 0;                    /* s[offset]: IndexError */
        off += 1 + (uint64_t)s[off];
        off += off & 1;
        if (off + 4 > n) return 1;                 /* struct.error: break */
        uint64_t size = be32(s + off);
        off += 4;
        if (code == 0x03ED) {                      /* ResolutionInfo: 14 bytes read */
            uint64_t avail = off < n ? n - off : 0;
            if ((size < avail ? size : avail) < 14) return 1;   /* struct.error: break */
        }
        off += size;
        off += off & 1;
    }
    return 1;
}

/* APP()'s dpi-from-EXIF step, once the EXIF header loaded: with
 * ResolutionUnit (0x0128) in IFD0 it computes
 *     float(x_resolution[0]) / x_resolution[1]
 * catching TypeError, KeyError, SyntaxError, ValueError and
 * ZeroDivisionError but not IndexError.  XResolution (0x011A) comes out of
 * Pillow as bytes for BYTE/UNDEFINED and as a str (one trailing NUL
 * dropped) for ASCII; bytes of length 1, an empty str or a str of one
 * digit raise IndexError.  Returns 0 then (the file is not identified). */
static int exif_dpi_ok(const uint8_t *exif, size_t len)
{
    if (len >= 6 && memcmp(exif, "Exif\0\0", 6) == 0) {
        exif += 6;
        len -= 6;
    }
    struct vs_tiff_entry unit, xres;
    if (!vs_tiff_ifd0_find(exif, len, 0x0128, &unit) || !vs_tiff_ifd0_find(exif, len, 0x011A, &xres))
        return 1;                                  /* KeyError: caught */
    if (xres.type == 1 || xres.type == 7) return xres.size >= 2;
    if (xres.type == 2) {
        size_t n = xres.size;
        if (n && xres.val[n - 1] == 0) n--;
        if (n == 0) return 0;                      /* ""[0] */
        if (n == 1 && xres.val[0] >= '0' && xres.val[0] <= '9') return 0;   /* "5"[1] */
    }
    return 1;
}

#define FAIL_OPEN(...) return vs_err_set(err, VS_BAD_INPUT, "JPEG: cannot identify image: " __VA_ARGS__)

static enum vs_status pillow_open(const uint8_t *d, size_t len, struct popen *po,
                                  struct vs_err *err)
{
    memset(po, 0, sizeof *po);
    int dpi_known = 0, exif_seen = 0;
    const uint8_t *icc_min = NULL;     /* smallest ICC chunk since the last SOF */
    size_t icc_min_len = 0;
    size_t p = 3;
    unsigned c = 0xFF;                 /* Pillow's s[0] */
    for (;;) {
        if (c != 0xFF) {               /* junk between markers */
            if (p >= len) FAIL_OPEN("data ends before the first scan");
            c = d[p++];
            continue;
        }
        if (p >= len) FAIL_OPEN("data ends inside a marker");
        unsigned m = 0xFF00u | d[p++];
        if (m == 0xFFFF) {             /* fill byte */
            c = 0xFF;
            continue;
        }
        if (m == 0xFF00) {             /* escaped FF: skipped */
            if (p >= len) FAIL_OPEN("data ends before the first scan");
            c = d[p++];
            continue;
        }
        if (m < 0xFFC0) FAIL_OPEN("no marker found (FF %02X at offset %zu)", m & 0xFF, p - 2);
        int has_len = !(m == 0xFFC8 || (m >= 0xFFD0 && m <= 0xFFD9) || (m >= 0xFFF0 && m <= 0xFFFD));
        if (has_len) {
            if (p + 2 > len) FAIL_OPEN("data ends inside the length of marker %04X", m);
            long n = (long)be16(d + p) - 2;
            p += 2;
            const uint8_t *s = d + p;
            size_t sn = 0;
            if (n > 0) {
                if ((size_t)n > len - p)
                    FAIL_OPEN("segment %04X of %ld bytes runs past the end of the file", m, n);
                sn = (size_t)n;
                p += sn;
            }
            int is_sof = (m >= 0xFFC0 && m <= 0xFFCF && m != 0xFFC4 && m != 0xFFC8 &&
                          m != 0xFFCC) || m == 0xFFDE;
            if (is_sof) {
                if (sn < 5) FAIL_OPEN("SOF segment of %zu bytes is too short", sn);
                if (s[0] != 8) FAIL_OPEN("cannot handle %u-bit layers", s[0]);
                if (sn < 6) FAIL_OPEN("SOF segment of %zu bytes is too short", sn);
                if (s[5] != 1 && s[5] != 3 && s[5] != 4)
                    FAIL_OPEN("cannot handle %u-layer images", s[5]);
                if ((sn - 6) % 3 != 0) FAIL_OPEN("SOF component list is cut short");
                if (icc_min && icc_min_len <= 13) FAIL_OPEN("ICC_PROFILE chunk too short");
                icc_min = NULL;
                po->sof = 1;
                po->height = be16(s + 1);
                po->width = be16(s + 3);
                po->layers = s[5];
            } else if (m == 0xFFDB) {                  /* DQT */
                size_t q = 0;
                while (q < sn) {
                    size_t qt = 1 + ((s[q] >> 4) == 0 ? 64 : 128);
                    if (sn - q < qt) FAIL_OPEN("bad quantization table marker");
                    q += qt;
                }
            } else if (m >= 0xFFE0 && m <= 0xFFEF) {   /* APPn */
                if (m == 0xFFE0 && sn >= 4 && memcmp(s, "JFIF", 4) == 0) {
                    if (sn < 7) FAIL_OPEN("JFIF segment of %zu bytes is too short", sn);
                    if (sn >= 12 && s[7] == 1) dpi_known = 1;
                } else if (m == 0xFFE1 && sn >= 5 && memcmp(s, "Exif\0", 5) == 0) {
                    if (!exif_seen) {              /* Pillow keeps the first */
                        exif_seen = 1;
                        po->exif = s;
                        po->exif_len = sn;
                    }
                } else if (m == 0xFFE2 && sn >= 12 && memcmp(s, "ICC_PROFILE\0", 12) == 0) {
                    if (!icc_min || bytes_less(s, sn, icc_min, icc_min_len)) {
                        icc_min = s;
                        icc_min_len = sn;
                    }
                } else if (m == 0xFFED && sn >= 14 && memcmp(s, "Photoshop 3.0\0", 14) == 0) {
                    if (!photoshop_ok(s, sn)) FAIL_OPEN("Photoshop resource block cut short");
                } else if (m == 0xFFEE && sn >= 5 && memcmp(s, "Adobe", 5) == 0) {
                    if (sn < 7) FAIL_OPEN("Adobe segment of %zu bytes is too short", sn);
                } else if (m == 0xFFE2 && sn >= 4 && memcmp(s, "MPF\0", 4) == 0) {
                    po->mp = s + 4;
                    po->mp_len = sn - 4;
                }
                if (!dpi_known && po->exif) {      /* Pillow loads the EXIF now */
                    enum vs_exif_header h = vs_exif_check_header(po->exif, po->exif_len);
                    if (h == VS_EXIF_SHORT_HEADER) FAIL_OPEN("EXIF TIFF header cut short");
                    if (h == VS_EXIF_NOT_TIFF) {   /* swallowed; no orientation later */
                        po->exif = NULL;
                        po->exif_len = 0;
                    } else if (!exif_dpi_ok(po->exif, po->exif_len)) {
                        FAIL_OPEN("EXIF XResolution too short for a dpi (IndexError)");
                    }
                    dpi_known = 1;
                }
            }
            if (m == 0xFFDA) break;                    /* SOS: Pillow stops here */
        }
        if (p >= len) FAIL_OPEN("data ends before the first scan");
        c = d[p++];
    }
    if (!po->sof || po->width == 0 || po->height == 0)
        FAIL_OPEN("no frame header (SOF) with a non-zero size before the first scan");
    return VS_OK;
}

/* jpeg_factory's MP-index probe (_getmp): most malformations only demote
 * an MPO to a plain JPEG, but MP entries shorter than NumberOfImages * 16
 * bytes raise struct.error, and the file is not identified.  Entries are
 * unpacked with the byte order "MM\0*" -> big, anything else -> little;
 * the first entry with a non-JPEG data format stops the walk (SyntaxError,
 * caught). */
static enum vs_status mpf_check(const uint8_t *mp, size_t n, struct vs_err *err)
{
    struct vs_tiff_entry q, e;
    if (!vs_tiff_ifd0_find(mp, n, 0xB001, &q) || !vs_tiff_ifd0_find(mp, n, 0xB002, &e))
        return VS_OK;                              /* SyntaxError: plain JPEG */
    /* NumberOfImages must come out of Pillow as a Python int. */
    int64_t quant;
    const uint8_t *v = q.val;
    switch (q.type) {
    case 3: quant = q.big ? be16(v) : (unsigned)v[1] << 8 | v[0]; break;
    case 8: quant = (int16_t)(q.big ? be16(v) : (unsigned)v[1] << 8 | v[0]); break;
    case 6: quant = (int8_t)v[0]; break;
    case 4: case 13: case 9: {
        uint32_t u = q.big ? be32(v) : (uint32_t)v[3] << 24 | (uint32_t)v[2] << 16 |
                                           (uint32_t)v[1] << 8 | v[0];
        quant = q.type == 9 ? (int64_t)(int32_t)u : (int64_t)u;
        break;
    }
    case 16: {   /* LONG8: the loop below ends with the entry bytes anyway */
        uint64_t u = 0;
        for (int b = 0; b < 8; b++) u |= (uint64_t)v[q.big ? b : 7 - b] << (8 * (7 - b));
        quant = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        break;
    }
    default: return VS_OK;                         /* TypeError: plain JPEG */
    }
    if (e.type != 1 && e.type != 7) return VS_OK;  /* not bytes: TypeError */
    int big = memcmp(mp, "MM\0*", 4) == 0;
    for (int64_t i = 0; i < quant; i++) {
        if ((uint64_t)(i + 1) * 16 > e.size)
            return vs_err_set(err, VS_BAD_INPUT,
                              "JPEG: cannot identify image: MP index lists %lld images but "
                              "holds %zu bytes of entries", (long long)quant, e.size);
        const uint8_t *a = e.val + i * 16;
        uint32_t attr = big ? be32(a) : (uint32_t)a[3] << 24 | (uint32_t)a[2] << 16 |
                                            (uint32_t)a[1] << 8 | a[0];
        if ((attr >> 24) & 7) return VS_OK;        /* "unsupported picture format" */
    }
    return VS_OK;
}

/* Copies the EXIF block chosen by pillow_open (prefix kept). */
static enum vs_status grab_exif(struct jctx *j, const struct popen *po, struct vs_err *err)
{
    if (!po->exif) return VS_OK;
    j->exif = malloc(po->exif_len);
    if (!j->exif) return vs_err_set(err, VS_NOMEM, "JPEG: out of memory for EXIF");
    memcpy(j->exif, po->exif, po->exif_len);
    j->exif_len = po->exif_len;
    return VS_OK;
}

enum vs_status vs_decode_jpeg(const uint8_t *data, size_t len,
                              const struct vs_image_limits *lim,
                              struct vs_decoded *out, struct vs_err *err)
{
    if (len > ULONG_MAX)
        return vs_err_set(err, VS_TOO_LARGE, "JPEG: input of %zu bytes is too large", len);
    /* Pillow's open first: identification, EXIF choice, MP index. */
    struct popen po;
    enum vs_status pst = pillow_open(data, len, &po, err);
    if (pst == VS_OK && po.mp) pst = mpf_check(po.mp, po.mp_len, err);
    if (pst == VS_OK) pst = vs_decode_check_pixels("JPEG", po.width, po.height, lim, err);
    if (pst != VS_OK) return pst;

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
    default: mode = NULL; break;
    }
    /* Pillow's mode comes from the last SOF; libjpeg keeps the only one. */
    if (!mode || ci->num_components != po.layers) {
        st = vs_err_set(err, VS_BAD_INPUT, "JPEG: cannot handle %d-layer images",
                        ci->num_components);
        goto fail;
    }
    st = vs_decode_check_pixels("JPEG", ci->image_width, ci->image_height, lim, err);
    if (st != VS_OK) goto fail;
    st = grab_exif(j, &po, err);
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
    /* Reading on to EOI.  Pillow feeds libjpeg VS_JPEG_READ_BLOCK-byte
     * reads and calls jpeg_finish_decompress in the call that produced the
     * last row, with only the data read so far; a suspension there is
     * success.  So libjpeg sees the file up to the end of the read holding
     * the current position, and suspends beyond it: an error in what it
     * reads there still fails, a bad marker past it is never seen. */
    size_t pos = len - ci->src->bytes_in_buffer;
    size_t window = pos % VS_JPEG_READ_BLOCK ? pos - pos % VS_JPEG_READ_BLOCK + VS_JPEG_READ_BLOCK : pos;
    if (window < len) ci->src->bytes_in_buffer = window - pos;
    ci->src->fill_input_buffer = suspend_fill;
    ci->src->skip_input_data = suspend_skip;
    (void)jpeg_finish_decompress(ci);   /* FALSE: suspended, as in Pillow */

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
