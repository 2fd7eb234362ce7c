/* slog.h: the server's structured log — one JSON object per line on
 * stderr: {"time":"2026-01-01T12:00:00.123Z","level":"info","msg":"...",
 * ...fields}.  A line is formatted in a private buffer and written with one
 * write(2), so lines from concurrent threads never interleave.
 * Threads: any; the level is set once at start-up (atomic).
 */
#ifndef VS_SERVE_SLOG_H
#define VS_SERVE_SLOG_H

#include <stdbool.h>

#include "jbuf.h"

enum vs_log_level { VS_LOG_DEBUG, VS_LOG_INFO, VS_LOG_WARN, VS_LOG_ERROR };

/* Parses "debug|info|warn|error"; false if unknown. */
bool vs_slog_parse_level(const char *s, enum vs_log_level *out);
void vs_slog_set_level(enum vs_log_level l);
bool vs_slog_enabled(enum vs_log_level l);

/* Writes one line.  fields: NULL or a buffer holding `,"key":value` pairs
 * (each starting with a comma) rendered with the jbuf JSON helpers. */
void vs_slog(enum vs_log_level l, const char *msg, const struct vs_jbuf *fields);

/* Convenience for a line with one string field: {"msg":msg,key:value}. */
void vs_slog_kv(enum vs_log_level l, const char *msg, const char *key, const char *value);

#endif
