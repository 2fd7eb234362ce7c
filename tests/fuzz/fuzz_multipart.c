/* fuzz_multipart.c: the multipart/form-data parser of src/serve/
 * multipart.c — the Content-Type helpers (vs_multipart_is_form,
 * vs_multipart_boundary) and the body splitter (vs_multipart_parse).
 *
 * Input layout: the bytes up to the first '\n' (at most 1023) are the
 * Content-Type header value; the rest is the request body, parsed with
 * the boundary the header gives (or "fuzzbnd" when it gives none, so the
 * body parser is reached even when the header is mangled), into at most
 * 4 parts held in an exactly-sized heap array.
 *
 * Oracle: a boundary that parses is 1..70 bytes, NUL-terminated; on
 * success every part lies inside the body after the previous one, its
 * name/filename/content_type are NUL-terminated, has_filename is 0 or 1,
 * and no part's data (counting the line break before it) holds a
 * delimiter line, i.e. "\n--boundary" followed by "--" or by optional
 * blanks and a line end — the rule multipart.h states.  On failure: a
 * status and a message.  Called from one thread.
 */
#include "fuzz_util.h"
#include "serve/multipart.h"

#define VSF_MAX_PARTS 4

/* Does body[at..] start a delimiter line's "--boundary" + tail? */
static int is_delim_at(const uint8_t *body, size_t len, size_t at, const char *b, size_t bl)
{
    if (len - at < bl + 2 || body[at] != '-' || body[at + 1] != '-' ||
        memcmp(body + at + 2, b, bl) != 0)
        return 0;
    size_t t = at + 2 + bl;
    if (t + 2 <= len && body[t] == '-' && body[t + 1] == '-') return 1;
    while (t < len && (body[t] == ' ' || body[t] == '\t')) t++;
    return (t < len && body[t] == '\n') || (t + 1 < len && body[t] == '\r' && body[t + 1] == '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 1024 ? size : 1024);
    if (!nl) return 0;
    char ct[1024];
    size_t hl = (size_t)(nl - data);
    memcpy(ct, data, hl);
    ct[hl] = '\0';
    const uint8_t *body = nl + 1;
    const size_t len = size - hl - 1;

    vsf_sink((uint64_t)vs_multipart_is_form(ct));
    char b[VS_MP_MAX_BOUNDARY + 1];
    struct vs_err err = { 0 };
    enum vs_status s = vs_multipart_boundary(ct, b, sizeof b, &err);
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_multipart_boundary");
        strcpy(b, "fuzzbnd");
    } else {
        size_t bl = strnlen(b, sizeof b);
        VSF_CHECK(bl >= 1 && bl <= VS_MP_MAX_BOUNDARY, "boundary of %zu bytes", bl);
    }

    struct vs_mp_part *parts = malloc(VSF_MAX_PARTS * sizeof *parts);
    VSF_CHECK(parts != NULL, "no memory");
    size_t n = 99;
    memset(&err, 0, sizeof err);
    s = vs_multipart_parse(body, len, b, parts, VSF_MAX_PARTS, &n, &err);
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_multipart_parse");
        VSF_CHECK(s == VS_BAD_INPUT, "status %s", vs_status_name(s));
        VSF_CHECK(n == 99, "nparts written on failure");
        free(parts);
        return 0;
    }
    VSF_CHECK(n <= VSF_MAX_PARTS, "%zu parts", n);
    const size_t bl = strlen(b);
    const uint8_t *prev_end = body;
    for (size_t i = 0; i < n; i++) {
        const struct vs_mp_part *p = &parts[i];
        VSF_CHECK(p->data >= prev_end && p->data <= body + len &&
                  p->len <= (size_t)(body + len - p->data),
                  "part %zu: [%td, +%zu) outside the %zu-byte body", i, p->data - body, p->len, len);
        VSF_CHECK(memchr(p->name, '\0', sizeof p->name) && memchr(p->filename, '\0', sizeof p->filename) &&
                  memchr(p->content_type, '\0', sizeof p->content_type), "part %zu: unterminated", i);
        VSF_CHECK(p->has_filename == 0 || p->has_filename == 1, "has_filename %d", p->has_filename);
        VSF_CHECK(p->has_filename || p->filename[0] == '\0', "filename without has_filename");
        /* No delimiter line inside: no '\n' at data-1 .. data+len-1 followed
         * by one.  (For an empty part the '\n' at data-1 ends the headers
         * and is the delimiter's own line break, so start at data.) */
        size_t from = (size_t)(p->data - body);
        if (from && p->len) from--;
        for (size_t k = from; k < (size_t)(p->data - body) + p->len; k++)
            if (body[k] == '\n')
                VSF_CHECK(!is_delim_at(body, len, k + 1, b, bl),
                          "part %zu holds a delimiter line at body offset %zu", i, k + 1);
        prev_end = p->data + p->len;
    }
    free(parts);
    return 0;
}
