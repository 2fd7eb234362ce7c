/* test_serve_multipart.c: the multipart/form-data parser (src/serve/
 * multipart.c) and the JSON string escaper it feeds (jbuf.c): good bodies,
 * CRLF and LF variants, binary data with boundary-like bytes, missing and
 * malformed parts; the capped growth of jbuf (the request body buffer).
 * Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "serve/jbuf.h"
#include "serve/multipart.h"

#define MAXP 8

static enum vs_status parse(const char *body, size_t len, const char *boundary,
                            struct vs_mp_part *parts, size_t *n, struct vs_err *err)
{
    return vs_multipart_parse((const uint8_t *)body, len, boundary, parts, MAXP, n, err);
}

static void test_boundary_header(void **state)
{
    (void)state;
    char b[VS_MP_MAX_BOUNDARY + 1];
    struct vs_err err = {0};
    assert_int_equal(vs_multipart_boundary("multipart/form-data; boundary=abc123", b, sizeof b, &err), VS_OK);
    assert_string_equal(b, "abc123");
    assert_int_equal(vs_multipart_boundary("multipart/form-data; charset=utf-8; BOUNDARY=\"a b;c\"", b, sizeof b, &err), VS_OK);
    assert_string_equal(b, "a b;c");
    assert_int_equal(vs_multipart_boundary("multipart/form-data", b, sizeof b, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "no boundary"));
    assert_int_equal(vs_multipart_boundary("multipart/form-data; boundary=", b, sizeof b, &err), VS_BAD_INPUT);
    assert_int_equal(vs_multipart_boundary("multipart/form-data; boundary=\"abc", b, sizeof b, &err), VS_BAD_INPUT);
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 71);
    assert_int_equal(vs_multipart_boundary(longb, b, sizeof b, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "71"));
    assert_true(vs_multipart_is_form("Multipart/Form-Data; boundary=x"));
    assert_false(vs_multipart_is_form("multipart/mixed; boundary=x"));
    assert_false(vs_multipart_is_form("image/png"));
    assert_false(vs_multipart_is_form(NULL));
}

static void test_two_parts_crlf(void **state)
{
    (void)state;
    const char body[] =
        "preamble to ignore\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"cat.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n"
        "\r\n"
        "JPEGDATA\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=files; filename=\"a \\\"q\\\".png\"\r\n"
        "\r\n"
        "\r\nline\r\n"
        "--XyZ--\r\n"
        "epilogue";
    struct vs_mp_part p[MAXP];
    size_t n = 0;
    struct vs_err err = {0};
    assert_int_equal(parse(body, sizeof body - 1, "XyZ", p, &n, &err), VS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(p[0].name, "file");
    assert_string_equal(p[0].filename, "cat.jpg");
    assert_string_equal(p[0].content_type, "image/jpeg");
    assert_int_equal(p[0].len, 8);
    assert_memory_equal(p[0].data, "JPEGDATA", 8);
    assert_string_equal(p[1].name, "files");
    assert_string_equal(p[1].filename, "a \"q\".png");
    /* data may itself start and end with line breaks */
    assert_int_equal(p[1].len, 6);
    assert_memory_equal(p[1].data, "\r\nline", 6);
}

static void test_lf_only_and_empty_part(void **state)
{
    (void)state;
    const char body[] =
        "--b\n"
        "Content-Disposition: form-data; name=\"a\"\n"
        "\n"
        "xy\n"
        "--b\n"
        "Content-Disposition: form-data; name=\"empty\"\n"
        "\n"
        "\n"
        "--b--";
    struct vs_mp_part p[MAXP];
    size_t n = 0;
    struct vs_err err = {0};
    assert_int_equal(parse(body, sizeof body - 1, "b", p, &n, &err), VS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(p[0].len, 2);
    assert_memory_equal(p[0].data, "xy", 2);
    assert_string_equal(p[1].name, "empty");
    assert_int_equal(p[1].len, 0);
    assert_false(p[0].has_filename);
}

static void test_binary_with_boundary_like_bytes(void **state)
{
    (void)state;
    /* Data holding NULs, "--bnd" not at a line start, "\r\n--bnd" followed
     * by more boundary characters (a longer token), and "\r\n--bn". */
    const uint8_t data[] = {0, 1, 2, '-', '-', 'b', 'n', 'd', '\r', '\n', '-', '-', 'b', 'n',
                            'd', 'X', '\r', '\n', '-', '-', 'b', 'n', 0xFF, 0, '\r'};
    uint8_t body[512];
    size_t len = 0;
    const char *head = "--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n";
    memcpy(body, head, strlen(head));
    len += strlen(head);
    memcpy(body + len, data, sizeof data);
    len += sizeof data;
    const char *tail = "\r\n--bnd--\r\n";
    memcpy(body + len, tail, strlen(tail));
    len += strlen(tail);
    struct vs_mp_part p[MAXP];
    size_t n = 0;
    struct vs_err err = {0};
    assert_int_equal(vs_multipart_parse(body, len, "bnd", p, MAXP, &n, &err), VS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(p[0].len, sizeof data);
    assert_memory_equal(p[0].data, data, sizeof data);
}

static void test_malformed(void **state)
{
    (void)state;
    struct vs_mp_part p[MAXP];
    size_t n = 99;
    struct vs_err err = {0};
    /* boundary never appears */
    const char a[] = "hello world";
    assert_int_equal(parse(a, sizeof a - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "does not contain the boundary"));
    /* no closing delimiter */
    const char b[] = "--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nDATA";
    assert_int_equal(parse(b, sizeof b - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "no closing boundary"));
    /* headers never end */
    const char c[] = "--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n";
    assert_int_equal(parse(c, sizeof c - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "not terminated"));
    /* no Content-Disposition */
    const char d[] = "--zz\r\nContent-Type: image/png\r\n\r\nX\r\n--zz--";
    assert_int_equal(parse(d, sizeof d - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "Content-Disposition"));
    /* header line without a colon */
    const char e[] = "--zz\r\nnonsense\r\n\r\nX\r\n--zz--";
    assert_int_equal(parse(e, sizeof e - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "':'"));
    /* unterminated quoted name */
    const char f[] = "--zz\r\nContent-Disposition: form-data; name=\"file\r\n\r\nX\r\n--zz--";
    assert_int_equal(parse(f, sizeof f - 1, "zz", p, &n, &err), VS_BAD_INPUT);
    /* huge header section */
    size_t hl = 20000;
    char *g = malloc(hl + 64);
    assert_non_null(g);
    strcpy(g, "--zz\r\nX-Junk: ");
    size_t gl = strlen(g);
    memset(g + gl, 'a', hl);
    gl += hl;
    memcpy(g + gl, "\r\n\r\nX\r\n--zz--", 13);
    gl += 13;
    assert_int_equal(parse(g, gl, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "exceed"));
    free(g);
    /* too many parts */
    char h[4096] = "";
    for (int i = 0; i < MAXP + 1; i++)
        strcat(h, "--zz\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\nX\r\n");
    strcat(h, "--zz--");
    assert_int_equal(parse(h, strlen(h), "zz", p, &n, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "more than 8 parts"));
    /* empty body */
    assert_int_equal(parse("", 0, "zz", p, &n, &err), VS_BAD_INPUT);
    assert_int_equal(n, 99); /* out-param untouched on failure */
    /* only a closing delimiter: zero parts, valid */
    assert_int_equal(parse("--zz--\r\n", 8, "zz", p, &n, &err), VS_OK);
    assert_int_equal(n, 0);
}

static void test_json_escape(void **state)
{
    (void)state;
    struct vs_jbuf b;
    vs_jbuf_init(&b, 0);
    /* quote, backslash, tab, newline, control, valid UTF-8 (2 and 4 byte),
     * and invalid bytes (lone continuation, truncated sequence) */
    const char in[] = "a\"b\\c\td\ne\x01 caf\xc3\xa9 \xf0\x9f\x90\xb1 \x80 \xe6\x97";
    vs_jbuf_json_str(&b, in, sizeof in - 1);
    assert_false(b.failed);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\td\\ne\\u0001 caf\xc3\xa9 \xf0\x9f\x90\xb1 \\ufffd \\ufffd\\ufffd\"");
    vs_jbuf_deinit(&b);
    vs_jbuf_init(&b, 8); /* cap: a too-long append marks failed */
    vs_jbuf_puts(&b, "12345");
    vs_jbuf_puts(&b, "6789");
    assert_true(b.failed);
    assert_null(vs_jbuf_take(&b, NULL));
    vs_jbuf_deinit(&b);
    vs_jbuf_init(&b, 0);
    vs_jbuf_json_float(&b, 0.123456789012);
    vs_jbuf_puts(&b, " ");
    vs_jbuf_json_float(&b, 1.0 / 0.0);
    assert_string_equal(b.data, "0.123456789 null");
    vs_jbuf_deinit(&b);
}

/* The request body buffer: grows with what arrives (geometrically), never
 * allocates past its cap + 1 (the NUL), whatever was declared. */
static void test_jbuf_growth(void **state)
{
    (void)state;
    struct vs_jbuf b;
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    vs_jbuf_init(&b, 5000);
    vs_jbuf_add(&b, chunk, 10);
    assert_int_equal(b.len, 10);
    assert_true(b.cap >= 11 && b.cap <= 256);     /* 10 bytes cost little */
    for (int i = 0; i < 4; i++) vs_jbuf_add(&b, chunk, sizeof chunk);
    vs_jbuf_add(&b, chunk, 990);                   /* exactly the cap: 5000 */
    assert_false(b.failed);
    assert_int_equal(b.len, 5000);
    assert_int_equal(b.cap, 5001);                 /* not 8192 */
    vs_jbuf_add(&b, chunk, 1);                     /* one past the cap */
    assert_true(b.failed);
    assert_int_equal(b.cap, 5001);
    vs_jbuf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary_header),
        cmocka_unit_test(test_two_parts_crlf),
        cmocka_unit_test(test_lf_only_and_empty_part),
        cmocka_unit_test(test_binary_with_boundary_like_bytes),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_jbuf_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
