/* auth.h: API keys for the prediction routes (--api-key, VITSERVE_API_KEYS,
 * --api-keys-file).
 *
 * A request is authorised when its `Authorization: Bearer <token>` header
 * carries one of the keys.  Keys are held only as SHA-256 digests and a
 * token is compared with every key's digest in constant time (no early
 * exit, and hashing first makes the time independent of where or whether
 * the strings differ and of the keys' lengths).
 *
 * Key sources: a comma-separated list (flags and the environment, fixed for
 * the life of the process: a process's environment cannot be changed from
 * outside) and an optional file (keys separated by commas or line breaks,
 * '#' starts a comment line), which vs_auth_reload() re-reads (SIGHUP).
 * Auth is on when any list key was given or a file was named, even if the
 * file holds no key (then every prediction is refused: fail closed).
 * Threads: check from any thread; reload from any thread (a rwlock swaps
 * the key set).
 */
#ifndef VS_SERVE_AUTH_H
#define VS_SERVE_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/vs.h"

struct vs_auth;

/* keys_csv: "k1,k2", or NULL when no key was given; file: path or NULL/"".
 * Errors: the file cannot be read (VS_IO / VS_NOT_FOUND), a key with
 * whitespace or control characters inside, or longer than 4096 bytes, and
 * keys_csv given but holding no key ("", " , ": VS_BAD_INPUT; an empty
 * $KEY in `--api-key "$KEY"` must not quietly turn authentication off). */
enum vs_status vs_auth_create(const char *keys_csv, const char *file, struct vs_auth **out,
                              struct vs_err *err);
void vs_auth_destroy(struct vs_auth *a);

bool vs_auth_enabled(const struct vs_auth *a);
/* Keys held now (list + file). */
size_t vs_auth_count(struct vs_auth *a);

/* Re-reads the keys file (no-op without one).  On failure the previous key
 * set stays in force. */
enum vs_status vs_auth_reload(struct vs_auth *a, struct vs_err *err);

/* Checks an Authorization header value (NULL when absent).  On success
 * writes a stable, non-secret id of the key (32 hex digits of its digest)
 * into id[33] when id is not NULL. */
bool vs_auth_check(struct vs_auth *a, const char *authorization, char id[33]);

/* Constant-time equality of two byte strings (time depends only on the
 * lengths being hashed, never on the contents). */
bool vs_auth_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
