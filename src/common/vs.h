/* vs.h: what every vitserve module shares — status codes, the error record,
 * the contract assertion and a few portable helpers.
 *
 * Every function that can fail returns enum vs_status and, when the caller
 * passes a non-NULL struct vs_err *, writes a one-line human message there
 * that names the file, field or value at fault.  Out-parameters are written
 * only on success.  A broken contract (a bug, not bad input) calls VS_ASSERT,
 * which aborts with file:line.  Thread-safe: nothing here has state.
 */
#ifndef VS_COMMON_VS_H
#define VS_COMMON_VS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define VS_STATUS_MAP(X)                                  \
    X(OK,          "success")                             \
    X(NOMEM,       "out of memory")                       \
    X(IO,          "I/O error")                           \
    X(BAD_INPUT,   "malformed input")                     \
    X(UNSUPPORTED, "unsupported input")                   \
    X(TOO_LARGE,   "input exceeds a configured limit")    \
    X(NOT_FOUND,   "not found")                           \
    X(BUSY,        "queue full, retry later")             \
    X(TIMEOUT,     "deadline exceeded")                   \
    X(BACKEND,     "compute backend failure")            \
    X(CANCELLED,   "client disconnected")

enum vs_status {
#define X(name, text) VS_##name,
    VS_STATUS_MAP(X)
#undef X
    VS_STATUS_COUNT
};

/* A failure's status plus a message for a person.  msg is always
 * NUL-terminated; an empty msg means "see vs_status_str(status)". */
struct vs_err {
    enum vs_status status;
    char msg[512];
};

/* Short English text of a status ("malformed input"); never NULL. */
const char *vs_status_str(enum vs_status s);

/* Upper-case name of a status ("BAD_INPUT"); never NULL. */
const char *vs_status_name(enum vs_status s);

/* Records status and a printf-style message in *err (err may be NULL) and
 * returns status, so that callers can write `return vs_err_set(err, ...)`. */
enum vs_status vs_err_set(struct vs_err *err, enum vs_status status,
                          const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to err->msg (used to add a file name on the way up). */
void vs_err_prefix(struct vs_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Aborts with file:line and the failed expression.  For broken contracts
 * only; bad input must never reach an assertion. */
#define VS_ASSERT(cond)                                                   \
    do {                                                                  \
        if (!(cond)) vs_assert_fail(#cond, __FILE__, __LINE__);           \
    } while (0)
_Noreturn void vs_assert_fail(const char *expr, const char *file, int line);

/* Monotonic clock in nanoseconds / milliseconds, and wall clock in seconds. */
uint64_t vs_now_ns(void);
double vs_now_ms(void);
double vs_wall_s(void);

/* Reads a whole file (or stdin for "-") into a malloc'd buffer.  Refuses
 * files over max_bytes (0 = no limit) with VS_TOO_LARGE. */
enum vs_status vs_read_file(const char *path, size_t max_bytes,
                            uint8_t **data, size_t *len, struct vs_err *err);

/* SHA-256 of a buffer (OpenSSL libcrypto); hex must hold 65 bytes. */
void vs_sha256(const void *data, size_t len, uint8_t out[32]);
void vs_hex(const uint8_t *bytes, size_t n, char *hex);

/* The digest that keys the result cache (digest.c): SHA-256 over a tag, the
 * length and the SHA-256 of each quarter of the buffer, as collision-
 * resistant as SHA-256 and ~3x faster on long buffers with the x86 SHA
 * extensions (the four quarters are hashed interleaved).  Not SHA-256 of
 * the bytes: never compare it with one.  vs_digest_portable computes the
 * same bytes with OpenSSL only; vs_digest_accelerated tells whether
 * vs_digest uses the SHA extensions on this CPU. */
void vs_digest(const void *data, size_t len, uint8_t out[32]);
void vs_digest_portable(const void *data, size_t len, uint8_t out[32]);
bool vs_digest_accelerated(void);

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool vs_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

#define VS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define VS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VS_MAX(a, b) ((a) > (b) ? (a) : (b))

#define VITSERVE_VERSION "0.1.0"

#endif
