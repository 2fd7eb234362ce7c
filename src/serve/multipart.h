/* multipart.h: a strict, allocation-free parser for multipart/form-data
 * request bodies (RFC 7578 / RFC 2046), as browsers, curl, requests and
 * FastAPI clients send them.
 *
 * The whole body is in memory (the HTTP layer caps it at
 * --max-upload-bytes), so parsing is a scan for "--boundary" delimiters;
 * part data are returned as pointers into the body, never copied, and may
 * hold any bytes (binary images with boundary-like runs included: only a
 * line break followed by "--" and the exact boundary, then "--" or a line
 * end, delimits a part).  CRLF is the norm; bare LF line ends are accepted
 * too, as common servers do.  Every malformed body is VS_BAD_INPUT with a
 * message fit for the client ("multipart body has no closing boundary").
 * Reentrant; no global state.
 */
#ifndef VS_SERVE_MULTIPART_H
#define VS_SERVE_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"

#define VS_MP_MAX_BOUNDARY 70        /* RFC 2046 limit */
#define VS_MP_MAX_HEADER_BYTES 8192  /* per part, all header lines together */

struct vs_mp_part {
    char name[64];           /* form field name ("" when absent or too long) */
    char filename[256];      /* client file name, truncated; "" when absent */
    int has_filename;        /* 1 when a filename parameter was present */
    char content_type[128];  /* part Content-Type, "" when absent */
    const uint8_t *data;     /* points into the body */
    size_t len;
};

/* Extracts the boundary parameter of a Content-Type header value
 * ("multipart/form-data; boundary=xyz", quoted or not) into out (at least
 * VS_MP_MAX_BOUNDARY + 1 bytes).  VS_BAD_INPUT names what is wrong. */
enum vs_status vs_multipart_boundary(const char *content_type, char *out,
                                     size_t out_size, struct vs_err *err);

/* True when a Content-Type value is multipart/form-data (any case). */
int vs_multipart_is_form(const char *content_type);

/* Splits body into at most max_parts parts (more is VS_BAD_INPUT, saying
 * how many are allowed).  *nparts and parts[] are written on success only
 * (parts[] may be partly scribbled on failure). */
enum vs_status vs_multipart_parse(const uint8_t *body, size_t len,
                                  const char *boundary,
                                  struct vs_mp_part *parts, size_t max_parts,
                                  size_t *nparts, struct vs_err *err);

#endif
