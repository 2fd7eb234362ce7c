/* test_serve_auth.c: API keys (src/serve/auth.c): the constant-time
 * comparison's correctness (equal, different content, different lengths,
 * prefixes, empty), Bearer parsing, list + file keys, reload keeping the
 * old keys on failure, fail-closed empty files, bad keys refused, and
 * CORS origin decisions (src/serve/cors.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "serve/auth.h"
#include "serve/cors.h"

static void test_equal(void **state)
{
    (void)state;
    assert_true(vs_auth_equal("secret", 6, "secret", 6));
    assert_false(vs_auth_equal("secret", 6, "secreT", 6));
    assert_false(vs_auth_equal("secret", 6, "Secret", 6));
    assert_false(vs_auth_equal("secret", 6, "secret2", 7));
    assert_false(vs_auth_equal("secret", 6, "secre", 5));
    assert_true(vs_auth_equal("", 0, "", 0));
    assert_false(vs_auth_equal("", 0, "a", 1));
    /* Embedded NULs are compared as bytes. */
    assert_false(vs_auth_equal("a\0b", 3, "a\0c", 3));
    assert_true(vs_auth_equal("a\0b", 3, "a\0b", 3));
    /* Every single-bit flip of a 64-byte key is caught. */
    char a[64], b[64];
    for (int i = 0; i < 64; i++) a[i] = (char)('A' + i % 26);
    for (int i = 0; i < 64 * 8; i++) {
        memcpy(b, a, sizeof b);
        b[i / 8] ^= (char)(1 << (i % 8));
        assert_false(vs_auth_equal(a, 64, b, 64));
    }
}

static char *write_file(const char *name, const char *text)
{
    const char *tmp = getenv("VS_TMP");
    char *path = malloc(512);
    snprintf(path, 512, "%s/%s", tmp && *tmp ? tmp : "/tmp", name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_keys(void **state)
{
    (void)state;
    struct vs_auth *a = NULL;
    struct vs_err err = {0};
    /* No keys: auth off (and nothing is accepted if someone asks). */
    assert_int_equal(vs_auth_create(NULL, NULL, &a, &err), VS_OK);
    assert_false(vs_auth_enabled(a));
    assert_false(vs_auth_check(a, "Bearer x", NULL));
    vs_auth_destroy(a);

    assert_int_equal(vs_auth_create(" k1 , k2,,", NULL, &a, &err), VS_OK);
    assert_true(vs_auth_enabled(a));
    assert_int_equal(vs_auth_count(a), 2);
    char id1[33], id2[33];
    assert_true(vs_auth_check(a, "Bearer k1", id1));
    assert_true(vs_auth_check(a, "bearer   k2  ", id2));
    assert_int_equal(strlen(id1), 32);
    assert_string_not_equal(id1, id2);
    assert_false(vs_auth_check(a, NULL, NULL));
    assert_false(vs_auth_check(a, "Bearer", NULL));
    assert_false(vs_auth_check(a, "Bearer ", NULL));
    assert_false(vs_auth_check(a, "Bearer k", NULL));
    assert_false(vs_auth_check(a, "Bearer k1x", NULL));
    assert_false(vs_auth_check(a, "Basic k1", NULL));
    assert_false(vs_auth_check(a, "Bearerk1", NULL));
    assert_false(vs_auth_check(a, "k1", NULL));
    vs_auth_destroy(a);

    /* A key with a blank or control character inside is refused. */
    assert_int_equal(vs_auth_create("a b", NULL, &a, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "blank or control"));
}

static void test_file_reload(void **state)
{
    (void)state;
    char *path = write_file("auth_keys.txt", "# comment, ignored\nfile1\n  file2 , file3\r\n\n");
    struct vs_auth *a = NULL;
    struct vs_err err = {0};
    assert_int_equal(vs_auth_create("list1", path, &a, &err), VS_OK);
    assert_int_equal(vs_auth_count(a), 4);
    assert_true(vs_auth_check(a, "Bearer list1", NULL));
    assert_true(vs_auth_check(a, "Bearer file3", NULL));
    assert_false(vs_auth_check(a, "Bearer #", NULL));
    assert_false(vs_auth_check(a, "Bearer comment", NULL));
    /* Rotate: file1 removed, file4 added; list keys stay. */
    free(write_file("auth_keys.txt", "file4\n"));
    assert_int_equal(vs_auth_reload(a, &err), VS_OK);
    assert_int_equal(vs_auth_count(a), 2);
    assert_false(vs_auth_check(a, "Bearer file1", NULL));
    assert_true(vs_auth_check(a, "Bearer file4", NULL));
    assert_true(vs_auth_check(a, "Bearer list1", NULL));
    /* A broken file keeps the previous keys. */
    free(write_file("auth_keys.txt", "good\nbad key\n"));
    assert_int_equal(vs_auth_reload(a, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_true(vs_auth_check(a, "Bearer file4", NULL));
    assert_false(vs_auth_check(a, "Bearer good", NULL));
    /* A vanished file too. */
    remove(path);
    assert_int_not_equal(vs_auth_reload(a, &err), VS_OK);
    assert_true(vs_auth_check(a, "Bearer file4", NULL));
    vs_auth_destroy(a);
    /* An empty file still turns auth on, and refuses everything. */
    free(write_file("auth_keys.txt", "# nobody\n"));
    assert_int_equal(vs_auth_create(NULL, path, &a, &err), VS_OK);
    assert_true(vs_auth_enabled(a));
    assert_false(vs_auth_check(a, "Bearer nobody", NULL));
    vs_auth_destroy(a);
    /* Keys given but none in them (an unset $KEY in --api-key "$KEY", an
     * empty VITSERVE_API_KEYS) is an error, not "auth off". */
    const char *empties[] = {"", " ", " , ,", "\t"};
    for (size_t i = 0; i < sizeof empties / sizeof *empties; i++) {
        a = NULL;
        assert_int_equal(vs_auth_create(empties[i], NULL, &a, &err), VS_BAD_INPUT);
        assert_null(a);
        assert_non_null(strstr(err.msg, "no key"));
    }
    /* A missing file at start is an error. */
    remove(path);
    assert_int_not_equal(vs_auth_create(NULL, path, &a, &err), VS_OK);
    assert_non_null(strstr(err.msg, "--api-keys-file"));
    free(path);
}

static void test_cors(void **state)
{
    (void)state;
    struct vs_cors *c = NULL;
    struct vs_err err = {0};
    bool vary;
    assert_int_equal(vs_cors_create("*", &c, &err), VS_OK);
    assert_string_equal(vs_cors_origin(c, "https://a.example", &vary), "*");
    assert_false(vary);
    assert_string_equal(vs_cors_origin(c, NULL, &vary), "*");
    vs_cors_destroy(c);
    assert_int_equal(vs_cors_create("https://a.example, http://localhost:3000", &c, &err), VS_OK);
    assert_string_equal(vs_cors_origin(c, "https://a.example", &vary), "https://a.example");
    assert_true(vary);
    assert_string_equal(vs_cors_origin(c, "http://LOCALHOST:3000", &vary), "http://LOCALHOST:3000");
    assert_null(vs_cors_origin(c, "https://evil.example", &vary));
    assert_null(vs_cors_origin(c, "https://a.example.evil", &vary));
    assert_null(vs_cors_origin(c, NULL, &vary));
    vs_cors_destroy(c);
    assert_int_equal(vs_cors_create("none", &c, &err), VS_OK);
    assert_null(vs_cors_origin(c, "https://a.example", &vary));
    vs_cors_destroy(c);
    assert_int_equal(vs_cors_create("https://a.example/path", &c, &err), VS_BAD_INPUT);
    assert_non_null(strstr(err.msg, "--cors-origins"));
    assert_int_equal(vs_cors_create("a.example", &c, &err), VS_BAD_INPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_file_reload),
        cmocka_unit_test(test_cors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
