/* test_serve_b64.c: the base64 decoder of the JSON routes
 * (src/serve/b64.c) against Python's base64 module's known encodings:
 * padding or none, URL-safe alphabet, blanks, data: URLs, and the errors
 * (bad characters, data after padding, a lone final character, size cap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "serve/b64.h"

static void ok(const char *in, const char *want, size_t want_len)
{
    uint8_t *out = NULL;
    size_t len = 0;
    struct vs_err err = {0};
    assert_int_equal(vs_serve_b64_decode(in, strlen(in), 1 << 20, &out, &len, &err), VS_OK);
    assert_int_equal(len, want_len);
    assert_memory_equal(out, want, want_len);
    free(out);
}

static void bad(const char *in, size_t max, enum vs_status want, const char *word)
{
    uint8_t *out = (uint8_t *)"untouched";
    size_t len = 77;
    struct vs_err err = {0};
    assert_int_equal(vs_serve_b64_decode(in, strlen(in), max, &out, &len, &err), want);
    assert_non_null(strstr(err.msg, word));
    assert_string_equal((const char *)out, "untouched");  /* out-params untouched */
    assert_int_equal(len, 77);
}

static void test_decode(void **state)
{
    (void)state;
    /* base64.b64encode(b"f"), b"fo", b"foo", b"foob", b"fooba", b"foobar" */
    ok("", "", 0);
    ok("Zg==", "f", 1);
    ok("Zm8=", "fo", 2);
    ok("Zm9v", "foo", 3);
    ok("Zm9vYg==", "foob", 4);
    ok("Zm9vYmE=", "fooba", 5);
    ok("Zm9vYmFy", "foobar", 6);
    ok("Zm9vYg", "foob", 4);                 /* padding optional */
    ok(" Zm9v\r\nYmFy\n", "foobar", 6);      /* blanks and line breaks */
    /* base64.b64encode(b"\xfb\xff\xfe") == b"+//+"; urlsafe: "-__-" */
    ok("+//+", "\xfb\xff\xfe", 3);
    ok("-__-", "\xfb\xff\xfe", 3);
    ok("data:image/png;base64,Zm9vYmFy", "foobar", 6);
    ok("DATA:;BASE64,Zg==", "f", 1);
}

static void test_errors(void **state)
{
    (void)state;
    bad("Zm9v!mFy", 100, VS_BAD_INPUT, "offset 4");
    bad("Zg==Zg==", 100, VS_BAD_INPUT, "after '='");
    bad("Zm9vY", 100, VS_BAD_INPUT, "lone final");
    bad("data:image/png,Zm9v", 100, VS_BAD_INPUT, "not base64");
    bad("data:image/png;base64", 100, VS_BAD_INPUT, "comma");
    bad("Zm9vYmFy", 5, VS_TOO_LARGE, "limit of 5 bytes");
    bad("Zm9vYg==", 3, VS_TOO_LARGE, "limit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
