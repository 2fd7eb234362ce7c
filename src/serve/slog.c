/* slog.c: JSON-lines logging to stderr (see slog.h).  Any thread. */
#include "slog.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = VS_LOG_INFO;

static const char *const NAMES[] = {"debug", "info", "warn", "error"};

bool vs_slog_parse_level(const char *s, enum vs_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, NAMES[i])) { *out = (enum vs_log_level)i; return true; }
    if (s && !strcmp(s, "warning")) { *out = VS_LOG_WARN; return true; }
    return false;
}

void vs_slog_set_level(enum vs_log_level l) { atomic_store(&g_level, (int)l); }

bool vs_slog_enabled(enum vs_log_level l) { return (int)l >= atomic_load(&g_level); }

void vs_slog(enum vs_log_level l, const char *msg, const struct vs_jbuf *fields)
{
    if (!vs_slog_enabled(l)) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* The date and time to the second, formatted once per second and
     * thread (gmtime_r and strftime on every request log line were a
     * visible part of the server's CPU on cache hits). */
    static _Thread_local time_t sec = (time_t)-1;
    static _Thread_local char day[32];
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (!strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm)) day[0] = '\0';
        sec = ts.tv_sec;
    }
    const long ms = ts.tv_nsec / 1000000;
    const char frac[6] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10),
                          (char)('0' + ms % 10), 'Z', '"'};
    struct vs_jbuf b;
    vs_jbuf_init(&b, 1 << 20);
    vs_jbuf_puts(&b, "{\"time\":\"");
    vs_jbuf_puts(&b, day);
    vs_jbuf_add(&b, frac, sizeof frac);
    vs_jbuf_puts(&b, ",\"level\":\"");
    vs_jbuf_puts(&b, NAMES[l]);
    vs_jbuf_puts(&b, "\",\"msg\":");
    vs_jbuf_json_cstr(&b, msg);
    if (fields && fields->data) vs_jbuf_add(&b, fields->data, fields->len);
    vs_jbuf_puts(&b, "}\n");
    if (!b.failed) {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(STDERR_FILENO, b.data + off, b.len - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    vs_jbuf_deinit(&b);
}

void vs_slog_kv(enum vs_log_level l, const char *msg, const char *key, const char *value)
{
    if (!vs_slog_enabled(l)) return;
    struct vs_jbuf f;
    vs_jbuf_init(&f, 0);
    vs_jbuf_puts(&f, ",");
    vs_jbuf_json_cstr(&f, key);
    vs_jbuf_puts(&f, ":");
    vs_jbuf_json_cstr(&f, value);
    vs_slog(l, msg, &f);
    vs_jbuf_deinit(&f);
}
