/* options.h: one table per subcommand describes every option — flag,
 * environment variable, type, bounds, default and help — and --help, the
 * environment and validation all derive from it.
 *
 * Precedence: default < environment variable < command-line flag.
 * A bad value (from either source) prints "vitserve CMD: --flag: why" and
 * makes vs_options_parse() return 2 (the exit status for usage errors).
 */
#ifndef VS_CLI_OPTIONS_H
#define VS_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum vs_opt_type {
    VS_OPT_FLAG,    /* bool *, no value; env accepts 1/0/true/false/yes/no */
    VS_OPT_INT,     /* int *, within [min, max] */
    VS_OPT_DOUBLE,  /* double *, within [min, max] */
    VS_OPT_SIZE,    /* size_t *, bytes; accepts suffixes k, M, G (powers of 1024) */
    VS_OPT_STRING,  /* const char ** (points into argv/environ or the default) */
    VS_OPT_LIST,    /* const char ** ; repeatable: values joined with ',' (malloc'd) */
};

struct vs_option {
    const char *name;      /* long flag without dashes, e.g. "max-batch" */
    char short_name;       /* e.g. 'k', or 0 */
    const char *env;       /* e.g. "VITSERVE_MAX_BATCH", or NULL */
    enum vs_opt_type type;
    void *target;
    double min, max;       /* bounds for INT/DOUBLE/SIZE (ignored if min > max) */
    const char *def;       /* default as text (NULL: none; target left as is) */
    const char *metavar;   /* e.g. "N" (NULL: derived from the type) */
    const char *help;      /* one sentence */
    const char *choices;   /* STRING only: "a|b|c" to restrict values, or NULL */
};

/* Parses argv[1..] (argv[0] is the subcommand name).  Options may appear
 * anywhere; "--" ends them; "-" alone is a positional.  Positionals are
 * stored in order into pos[] (at most max_pos; more is an error), their
 * count in *npos.  --help / -h prints help and returns 1 (caller exits 0),
 * also when an environment variable holds a bad value (help must work in a
 * misconfigured environment).
 * Returns 0 on success, 2 on a usage error (already printed to stderr). */
int vs_options_parse(const char *cmd, const char *usage, const char *summary,
                     const struct vs_option *opts, size_t nopts,
                     int argc, char **argv,
                     char **pos, int max_pos, int *npos);

/* Whether argv[1..] asks for --help / -h (before any "--"). */
bool vs_options_wants_help(int argc, char **argv);

/* Prints the help of a subcommand: usage, summary, then one line per option
 * with its env variable and default. */
void vs_options_help(FILE *f, const char *cmd, const char *usage,
                     const char *summary, const struct vs_option *opts,
                     size_t nopts);

#endif
