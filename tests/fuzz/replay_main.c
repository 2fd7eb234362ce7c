/* replay_main.c: the main() a fuzz driver is linked with when it is not a
 * libFuzzer binary (gcc, the normal and ASan builds).  It runs every file
 * named on the command line, and every regular file of every folder named
 * there (sorted by name, dot-files and README* skipped), through
 * LLVMFuzzerTestOneInput, so each corpus entry ever committed — crashes
 * found by the fuzzers included — stays a regression test in ctest.
 *
 * Each input is copied into a malloc'd buffer of exactly its size, so
 * ASan flags a parser reading one byte past the end, as libFuzzer would.
 * Exit status: 0 when every input ran (a crash aborts the process, naming
 * the input on stderr first), 1 on a usage or I/O problem or when no input
 * was found at all (an empty corpus would make the test vacuous).
 * Single-threaded.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

/* Runs one file; returns 0, or -1 when it cannot be read. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        return -1;
    }
    /* exact: a buffer of len bytes (1 for an empty input, never read) */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) { free(buf); return -1; }
    memcpy(exact, buf, len);
    free(buf);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir in name order; adds the count to *n. */
static int run_dir(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open folder %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0) continue;
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) { rc = -1; break; }
            names = nn;
            cap = ncap;
        }
        size_t sz = strlen(dir) + strlen(e->d_name) + 2;
        if (!(names[count] = malloc(sz))) { rc = -1; break; }
        snprintf(names[count], sz, "%s/%s", dir, e->d_name);
        count++;
    }
    closedir(d);
    if (count) qsort(names, count, sizeof *names, cmp_str);
    for (size_t i = 0; i < count; i++) {
        struct stat sb;
        if (rc == 0 && stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (run_file(names[i]) != 0) rc = -1;
            else (*n)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_FOLDER...\n"
                        "runs each input through the fuzz driver once\n", argv[0]);
        return 1;
    }
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        int rc = S_ISDIR(sb.st_mode) ? run_dir(argv[i], &n) : run_file(argv[i]);
        if (rc != 0) return 1;
        if (!S_ISDIR(sb.st_mode)) n++;
    }
    if (n == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replay: %zu inputs ran without a failure\n", n);
    return 0;
}
