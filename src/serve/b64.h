/* b64.h: base64 decoding for images sent inside JSON (the Hugging Face
 * `inputs` field, KServe v2 BYTES tensors).  Accepts the standard and the
 * URL-safe alphabet, optional '=' padding, blanks and line breaks anywhere,
 * and a `data:[<type>];base64,` URL prefix.  Reentrant.
 */
#ifndef VS_SERVE_B64_H
#define VS_SERVE_B64_H

#include <stddef.h>
#include <stdint.h>

#include "common/vs.h"

/* Decodes s[0..n) into a malloc'd buffer (*out, *len; written on success
 * only).  Output over max_bytes is VS_TOO_LARGE; a character outside the
 * alphabet, misplaced padding or a dangling single character VS_BAD_INPUT
 * (the message says which offset); a data: URL that is not base64
 * VS_BAD_INPUT. */
enum vs_status vs_serve_b64_decode(const char *s, size_t n, size_t max_bytes, uint8_t **out,
                                   size_t *len, struct vs_err *err);

#endif
