/* options.c: the option-table parser shared by every subcommand.
 * Called once per process from the main thread. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *metavar(const struct vs_option *o)
{
    if (o->metavar) return o->metavar;
    switch (o->type) {
    case VS_OPT_INT: return "N";
    case VS_OPT_DOUBLE: return "X";
    case VS_OPT_SIZE: return "BYTES";
    default: return "VALUE";
    }
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcasecmp(s, yes[i])) { *out = true; return true; }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcasecmp(s, no[i])) { *out = false; return true; }
    return false;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* Stores text into the option's target; prints why on failure. */
static int set_value(const char *cmd, const struct vs_option *o, const char *v,
                     const char *source)
{
    char *end = NULL;
    bool bounded = o->min <= o->max;
    errno = 0;
    switch (o->type) {
    case VS_OPT_FLAG:
        if (!parse_bool(v, (bool *)o->target)) goto bad;
        return 0;
    case VS_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno) goto bad;
        if (bounded && (x < o->min || x > o->max)) goto range;
        if (x < INT32_MIN || x > INT32_MAX) goto range;
        *(int *)o->target = (int)x;
        return 0;
    }
    case VS_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x)) goto bad;
        if (bounded && (x < o->min || x > o->max)) goto range;
        *(double *)o->target = x;
        return 0;
    }
    case VS_OPT_SIZE: {
        double x = strtod(v, &end);
        if (end == v || errno || !(x >= 0)) goto bad; /* also "nan" (passes every range check) */
        double mul = 1;
        if (*end) {
            switch (tolower((unsigned char)*end)) {
            case 'k': mul = 1024.0; break;
            case 'm': mul = 1024.0 * 1024; break;
            case 'g': mul = 1024.0 * 1024 * 1024; break;
            default: goto bad;
            }
            end++;
            if (*end == 'i' || *end == 'I') end++;
            if (*end == 'b' || *end == 'B') end++;
            if (*end) goto bad;
        }
        x *= mul;
        if (bounded && (x < o->min || x > o->max)) goto range;
        if (x > (double)SIZE_MAX) goto range;
        *(size_t *)o->target = (size_t)x;
        return 0;
    }
    case VS_OPT_STRING:
        if (o->choices && !in_choices(o->choices, v)) {
            fprintf(stderr, "vitserve %s: --%s%s: '%s' is not one of %s\n", cmd,
                    o->name, source, v, o->choices);
            return 2;
        }
        *(const char **)o->target = v;
        return 0;
    case VS_OPT_LIST: {
        const char *old = *(const char **)o->target;
        if (!old || !*old || !strcmp(source, " (default)")) {
            *(const char **)o->target = v;
            return 0;
        }
        size_t n = strlen(old) + strlen(v) + 2;
        char *joined = malloc(n);
        if (!joined) { fprintf(stderr, "vitserve %s: out of memory\n", cmd); return 2; }
        snprintf(joined, n, "%s,%s", old, v);
        *(const char **)o->target = joined; /* lives until exit */
        return 0;
    }
    }
bad:
    fprintf(stderr, "vitserve %s: --%s%s: '%s' is not a valid %s\n", cmd, o->name,
            source, v, o->type == VS_OPT_FLAG ? "boolean (true/false)" : metavar(o));
    return 2;
range:
    fprintf(stderr, "vitserve %s: --%s%s: '%s' is out of range [%g, %g]\n", cmd,
            o->name, source, v, o->min, o->max);
    return 2;
}

void vs_options_help(FILE *f, const char *cmd, const char *usage,
                     const char *summary, const struct vs_option *opts,
                     size_t nopts)
{
    fprintf(f, "usage: vitserve %s %s\n\n%s\n\noptions:\n", cmd, usage, summary);
    for (size_t i = 0; i < nopts; i++) {
        const struct vs_option *o = &opts[i];
        char flag[96];
        if (o->type == VS_OPT_FLAG)
            snprintf(flag, sizeof flag, "%s%c%s--%s", o->short_name ? "-" : "",
                     o->short_name ? o->short_name : ' ', o->short_name ? ", " : "", o->name);
        else
            snprintf(flag, sizeof flag, "%s%c%s--%s %s", o->short_name ? "-" : "",
                     o->short_name ? o->short_name : ' ', o->short_name ? ", " : "",
                     o->name, metavar(o));
        fprintf(f, "  %-30s %s", flag[0] == ' ' ? flag + 1 : flag, o->help);
        if (o->choices) fprintf(f, " (%s)", o->choices);
        if (o->def && o->def[0]) fprintf(f, " [default: %s]", o->def);
        if (o->env) fprintf(f, " [env: %s]", o->env);
        fputc('\n', f);
    }
    fprintf(f, "  %-30s %s\n", "-h, --help", "show this help and exit");
}

bool vs_options_wants_help(int argc, char **argv)
{
    for (int a = 1; a < argc && strcmp(argv[a], "--"); a++)
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) return true;
    return false;
}

int vs_options_parse(const char *cmd, const char *usage, const char *summary,
                     const struct vs_option *opts, size_t nopts,
                     int argc, char **argv,
                     char **pos, int max_pos, int *npos)
{
    int rc;
    *npos = 0;
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].type == VS_OPT_FLAG) *(bool *)opts[i].target = false;
        if (opts[i].def && (rc = set_value(cmd, &opts[i], opts[i].def, " (default)")))
            return rc;
    }
    for (size_t i = 0; i < nopts; i++) {
        const char *v = opts[i].env ? getenv(opts[i].env) : NULL;
        char src[96];
        if (!v) continue;
        snprintf(src, sizeof src, " (from $%s)", opts[i].env);
        if ((rc = set_value(cmd, &opts[i], v, src))) {
            if (!vs_options_wants_help(argc, argv)) return rc;
            vs_options_help(stdout, cmd, usage, summary, opts, nopts);
            return 1;
        }
    }
    bool only_pos = false;
    for (int a = 1; a < argc; a++) {
        char *arg = argv[a];
        if (only_pos || arg[0] != '-' || !strcmp(arg, "-")) {
            if (*npos >= max_pos) {
                fprintf(stderr, "vitserve %s: unexpected argument '%s' (see --help)\n", cmd, arg);
                return 2;
            }
            pos[(*npos)++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) { only_pos = true; continue; }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            vs_options_help(stdout, cmd, usage, summary, opts, nopts);
            return 1;
        }
        const struct vs_option *o = NULL;
        const char *value = NULL;
        if (arg[1] == '-') {
            const char *name = arg + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t i = 0; i < nopts && !o; i++)
                if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len)) o = &opts[i];
            if (o && eq) value = eq + 1;
        } else if (arg[2] == '\0') {
            for (size_t i = 0; i < nopts && !o; i++)
                if (opts[i].short_name == arg[1]) o = &opts[i];
        }
        if (!o) {
            fprintf(stderr, "vitserve %s: unknown option '%s' (see --help)\n", cmd, arg);
            return 2;
        }
        if (o->type == VS_OPT_FLAG) {
            if (value) {
                if ((rc = set_value(cmd, o, value, ""))) return rc;
            } else {
                *(bool *)o->target = true;
            }
            continue;
        }
        if (!value) {
            if (a + 1 >= argc) {
                fprintf(stderr, "vitserve %s: --%s needs a value (%s)\n", cmd, o->name, metavar(o));
                return 2;
            }
            value = argv[++a];
        }
        if ((rc = set_value(cmd, o, value, ""))) return rc;
    }
    return 0;
}
