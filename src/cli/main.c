/* main.c: `vitserve <command> [options]` — dispatch to a subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "common/vs.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve",      vs_cmd_serve,      "serve a model over HTTP (port 7860)"},
    {"classify",   vs_cmd_classify,   "print the top-k labels of image files"},
    {"inspect",    vs_cmd_inspect,    "show how image files decode (size, mode, RGB hash)"},
    {"preprocess", vs_cmd_preprocess, "write the model's input tensor for an image"},
    {"info",       vs_cmd_info,       "describe a checkpoint"},
    {"bench",      vs_cmd_bench,      "time the forward pass"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vitserve <command> [options]\n\n"
               "Serve and run Hugging Face ViT image classifiers.\n\ncommands:\n");
    for (size_t i = 0; i < VS_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`vitserve <command> --help` lists a command's options.\n"
               "`vitserve --version` prints the version.\n");
}

/* The GEMM library's OpenMP threads spin-wait between parallel regions by
 * default (GOMP's "active" policy), taking the cores away from the HTTP and
 * decode threads that share them.  libgomp reads OMP_WAIT_POLICY once, when
 * it is loaded, so the only way to change it for this process is to set it
 * and exec ourselves again.  A value the user set is left alone. */
static void passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("VITSERVE_NO_REEXEC")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    setenv("VITSERVE_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the default policy. */
}

int main(int argc, char **argv)
{
    passive_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("vitserve %s\n", VITSERVE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < VS_ARRAY_LEN(commands); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vitserve: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
