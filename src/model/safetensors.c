/* safetensors.c: memory-mapped, fully validated safetensors files.
 *
 * File layout (https://github.com/huggingface/safetensors, "Format"):
 *   [8 bytes]  N, little-endian u64: header length
 *   [N bytes]  UTF-8 JSON object {"__metadata__": {str: str}?,
 *              "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
 *   [rest]     the data section; tensor bytes are data[b, e), C order, LE.
 *
 * Invariants after a successful open: for every tensor, b <= e <= size of
 * its file's data section, numel * dtype size == e - b, and the [b, e)
 * ranges of one file are pairwise disjoint; names are unique across the
 * set and sorted (binary search).  Every check failure is VS_BAD_INPUT
 * "<file>: tensor '<name>': <what>" (or "<file>: <what>" for the header).
 *
 * Threads: open/close from one thread; lookups are read-only.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads little-endian data in place; port the loads first"
#endif

struct st_file {
    char *path;
    const uint8_t *map;     /* whole file, PROT_READ; NULL when size 0 */
    size_t map_len;
    const uint8_t *data;    /* map + 8 + N */
    uint64_t data_len;
    json_t *metadata;       /* "__metadata__" object (borrowed from header) */
    json_t *header;
};

struct vs_st {
    struct st_file *files;
    int nfiles, cap_files;
    char *index_path;       /* model.safetensors.index.json, or NULL */
    struct vs_st_tensor *t; /* sorted by name */
    size_t nt, cap_t;
    uint64_t data_bytes;
};

static const struct { const char *name; size_t size; } dtypes[VS_ST_DTYPE_COUNT] = {
    [VS_ST_F64] = {"F64", 8},   [VS_ST_F32] = {"F32", 4},
    [VS_ST_F16] = {"F16", 2},   [VS_ST_BF16] = {"BF16", 2},
    [VS_ST_I64] = {"I64", 8},   [VS_ST_I32] = {"I32", 4},
    [VS_ST_I16] = {"I16", 2},   [VS_ST_I8] = {"I8", 1},
    [VS_ST_U64] = {"U64", 8},   [VS_ST_U32] = {"U32", 4},
    [VS_ST_U16] = {"U16", 2},   [VS_ST_U8] = {"U8", 1},
    [VS_ST_BOOL] = {"BOOL", 1}, [VS_ST_F8_E4M3] = {"F8_E4M3", 1},
    [VS_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *vs_st_dtype_name(enum vs_st_dtype d)
{
    return (unsigned)d < VS_ST_DTYPE_COUNT ? dtypes[d].name : "?";
}

size_t vs_st_dtype_size(enum vs_st_dtype d)
{
    return (unsigned)d < VS_ST_DTYPE_COUNT ? dtypes[d].size : 0;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE: case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* ---- building the set --------------------------------------------------- */

static void st_file_release(struct st_file *f)
{
    if (f->map) munmap((void *)f->map, f->map_len);
    json_decref(f->header);
    free(f->path);
}

void vs_st_close(struct vs_st *st)
{
    if (!st) return;
    for (int i = 0; i < st->nfiles; i++) st_file_release(&st->files[i]);
    free(st->files);
    free(st->index_path);
    free(st->t);                 /* names point into the headers (freed above) */
    free(st);
}

/* Maps path read-only and checks the 8-byte length prefix. */
static enum vs_status map_file(const char *path, struct st_file *f, struct vs_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vs_err_set(err, errno == ENOENT ? VS_NOT_FOUND : VS_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return vs_err_set(err, VS_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return vs_err_set(err, VS_BAD_INPUT, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: file is %llu bytes, too short for the 8-byte header length",
                          path, (unsigned long long)size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return vs_err_set(err, VS_TOO_LARGE, "%s: file too large to map", path);
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);                  /* the mapping keeps the file alive */
    if (m == MAP_FAILED)
        return vs_err_set(err, VS_IO, "%s: mmap of %llu bytes failed: %s", path,
                          (unsigned long long)size, strerror(e));
    f->map = m;
    f->map_len = (size_t)size;
    return VS_OK;
}

static enum vs_status push_tensor(struct vs_st *st, struct vs_st_tensor *t,
                                  struct vs_err *err)
{
    if (st->nt == st->cap_t) {
        size_t cap = st->cap_t ? st->cap_t * 2 : 64;
        struct vs_st_tensor *n = realloc(st->t, cap * sizeof *n);
        if (!n) return vs_err_set(err, VS_NOMEM, "out of memory for the tensor table");
        st->t = n;
        st->cap_t = cap;
    }
    st->t[st->nt++] = *t;
    return VS_OK;
}

/* Reads a JSON integer >= 0 (as u64); false for anything else. */
static bool json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0) return false;
    *out = (uint64_t)x;
    return true;
}

static int cmp_begin(const void *a, const void *b)
{
    const struct vs_st_tensor *x = *(const struct vs_st_tensor *const *)a;
    const struct vs_st_tensor *y = *(const struct vs_st_tensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Parses and validates one tensor entry of file fi's header. */
static enum vs_status parse_entry(struct vs_st *st, int fi, const char *name,
                                  json_t *v, struct vs_err *err)
{
    struct st_file *f = &st->files[fi];
    const char *p = f->path;
    if (!json_is_object(v))
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': entry must be an object, found %s",
                          p, name, json_type_name(v));
    struct vs_st_tensor t = {.name = name, .file = fi};

    json_t *dt = json_object_get(v, "dtype");
    if (!dt) return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': no \"dtype\"", p, name);
    if (!json_is_string(dt))
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': \"dtype\" must be a string, found %s",
                          p, name, json_type_name(dt));
    const char *ds = json_string_value(dt);
    int d = -1;
    for (int i = 0; i < VS_ST_DTYPE_COUNT; i++)
        if (strcmp(ds, dtypes[i].name) == 0) d = i;
    if (d < 0)
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': unknown dtype '%.40s'", p, name, ds);
    t.dtype = (enum vs_st_dtype)d;

    json_t *sh = json_object_get(v, "shape");
    if (!sh) return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': no \"shape\"", p, name);
    if (!json_is_array(sh))
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': \"shape\" must be an array, found %s",
                          p, name, json_type_name(sh));
    size_t nd = json_array_size(sh);
    if (nd > VS_ST_MAX_DIMS)
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': %zu dimensions (at most %d)",
                          p, name, nd, VS_ST_MAX_DIMS);
    t.ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t x;
        if (!json_u64(json_array_get(sh, i), &x))
            return vs_err_set(err, VS_BAD_INPUT,
                              "%s: tensor '%s': shape[%zu] must be a non-negative integer",
                              p, name, i);
        if (x != 0 && numel > UINT64_MAX / x)
            return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': shape overflows", p, name);
        numel *= x;
        t.shape[i] = (int64_t)x;
    }
    t.numel = numel;

    json_t *off = json_object_get(v, "data_offsets");
    if (!off) return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': no \"data_offsets\"", p, name);
    uint64_t b, e;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_u64(json_array_get(off, 0), &b) || !json_u64(json_array_get(off, 1), &e))
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: tensor '%s': \"data_offsets\" must be [begin, end], two non-negative integers",
                          p, name);
    if (b > e)
        return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': data_offsets [%llu, %llu]: begin after end",
                          p, name, (unsigned long long)b, (unsigned long long)e);
    if (e > f->data_len)
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] out of range: the data section has %llu bytes",
                          p, name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)f->data_len);
    size_t es = dtypes[d].size;
    if (numel > UINT64_MAX / es || numel * es != e - b)
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: tensor '%s': shape holds %llu x %zu bytes (%s) but data_offsets [%llu, %llu] span %llu bytes",
                          p, name, (unsigned long long)numel, es, dtypes[d].name,
                          (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)(e - b));
    t.nbytes = e - b;
    t.data = f->data + b;
    st->data_bytes += t.nbytes;
    return push_tensor(st, &t, err);
}

/* Maps path, parses its header and appends its tensors to st. */
static enum vs_status add_file(struct vs_st *st, const char *path, struct vs_err *err)
{
    if (st->nfiles == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        struct st_file *n = realloc(st->files, (size_t)cap * sizeof *n);
        if (!n) return vs_err_set(err, VS_NOMEM, "out of memory");
        st->files = n;
        st->cap_files = cap;
    }
    int fi = st->nfiles;
    struct st_file *f = &st->files[fi];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return vs_err_set(err, VS_NOMEM, "out of memory");
    st->nfiles++;               /* from here on vs_st_close() releases it */

    enum vs_status s = map_file(path, f, err);
    if (s) return s;

    uint64_t n = 0;             /* header length, little-endian u64 */
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > VS_ST_MAX_HEADER)
        return vs_err_set(err, VS_BAD_INPUT, "%s: header length %llu exceeds the %llu-byte limit",
                          path, (unsigned long long)n, (unsigned long long)VS_ST_MAX_HEADER);
    if (n > f->map_len - 8)
        return vs_err_set(err, VS_BAD_INPUT,
                          "%s: header length %llu runs past the end of the file (%zu bytes): truncated?",
                          path, (unsigned long long)n, f->map_len);
    if (n < 2)
        return vs_err_set(err, VS_BAD_INPUT, "%s: header length %llu is too short for a JSON object",
                          path, (unsigned long long)n);
    f->data = f->map + 8 + n;
    f->data_len = f->map_len - 8 - n;

    json_error_t je;
    f->header = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!f->header)
        return vs_err_set(err, VS_BAD_INPUT, "%s: header is not valid JSON (line %d, column %d): %s",
                          path, je.line, je.column, je.text);
    if (!json_is_object(f->header))
        return vs_err_set(err, VS_BAD_INPUT, "%s: header must be a JSON object, found %s",
                          path, json_type_name(f->header));

    size_t first = st->nt;
    const char *key;
    json_t *v;
    json_object_foreach(f->header, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v))
                return vs_err_set(err, VS_BAD_INPUT, "%s: __metadata__ must be an object, found %s",
                                  path, json_type_name(v));
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv))
                    return vs_err_set(err, VS_BAD_INPUT,
                                      "%s: __metadata__ '%s' must be a string, found %s",
                                      path, mk, json_type_name(mv));
            }
            f->metadata = v;
            continue;
        }
        s = parse_entry(st, fi, key, v, err);
        if (s) return s;
    }

    /* Overlap check: sort this file's tensors by begin; each must start at
     * or after the end of the previous one (empty tensors never overlap). */
    size_t cnt = st->nt - first;
    if (cnt > 1) {
        const struct vs_st_tensor **by = malloc(cnt * sizeof *by);
        if (!by) return vs_err_set(err, VS_NOMEM, "out of memory");
        for (size_t i = 0; i < cnt; i++) by[i] = &st->t[first + i];
        qsort(by, cnt, sizeof *by, cmp_begin);
        const struct vs_st_tensor *prev = NULL;
        for (size_t i = 0; i < cnt; i++) {
            const struct vs_st_tensor *t = by[i];
            if (t->nbytes == 0) continue;
            if (prev && t->data < prev->data + prev->nbytes) {
                s = vs_err_set(err, VS_BAD_INPUT,
                               "%s: tensor '%s': data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                               path, t->name,
                               (unsigned long long)(t->data - f->data),
                               (unsigned long long)(t->data - f->data + t->nbytes),
                               prev->name, (unsigned long long)(prev->data - f->data),
                               (unsigned long long)(prev->data - f->data + prev->nbytes));
                break;
            }
            prev = t;
        }
        free(by);
        if (s) return s;
    }
    return VS_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct vs_st_tensor *)a)->name, ((const struct vs_st_tensor *)b)->name);
}

/* Sorts by name and refuses duplicates (a name in two shards). */
static enum vs_status finish(struct vs_st *st, struct vs_err *err)
{
    if (st->nt > 1) qsort(st->t, st->nt, sizeof *st->t, cmp_name);
    for (size_t i = 1; i < st->nt; i++)
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': also present in %s",
                              st->files[st->t[i].file].path, st->t[i].name,
                              st->files[st->t[i - 1].file].path);
    return VS_OK;
}

enum vs_status vs_st_open_file(const char *path, struct vs_st **out, struct vs_err *err)
{
    struct vs_st *st = calloc(1, sizeof *st);
    if (!st) return vs_err_set(err, VS_NOMEM, "out of memory");
    enum vs_status s = add_file(st, path, err);
    if (!s) s = finish(st, err);
    if (s) {
        vs_st_close(st);
        return s;
    }
    *out = st;
    return VS_OK;
}

/* A shard name must be a plain file name inside the snapshot folder. */
static bool plain_name(const char *s)
{
    if (!*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    for (const char *c = s; *c; c++)
        if (*c == '/' || *c == '\\' || (unsigned char)*c < 0x20) return false;
    return true;
}

enum vs_status vs_st_check_index_size(const char *path, struct vs_err *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && (long long)sb.st_size > VS_ST_MAX_INDEX_BYTES)
        return vs_err_set(err, VS_TOO_LARGE, "%s: %lld bytes, more than an index can need "
                          "(limit %lld)", path, (long long)sb.st_size, VS_ST_MAX_INDEX_BYTES);
    return VS_OK;
}

static enum vs_status open_index(struct vs_st *st, const char *dir, const char *ipath,
                                 struct vs_err *err)
{
    st->index_path = strdup(ipath);
    if (!st->index_path) return vs_err_set(err, VS_NOMEM, "out of memory");
    enum vs_status size_st = vs_st_check_index_size(ipath, err);
    if (size_st != VS_OK) return size_st;
    json_error_t je;
    json_t *idx = json_load_file(ipath, 0, &je);
    if (!idx)
        return vs_err_set(err, VS_BAD_INPUT, "%s: line %d, column %d: %s", ipath, je.line,
                          je.column, je.text);
    enum vs_status s = VS_OK;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(idx) || !json_is_object(wm)) {
        s = vs_err_set(err, VS_BAD_INPUT, "%s: no \"weight_map\" object", ipath);
        goto out;
    }
    /* Open each distinct shard once, in the order first referenced. */
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) {
            s = vs_err_set(err, VS_BAD_INPUT, "%s: weight_map['%s'] must be a string, found %s",
                           ipath, name, json_type_name(v));
            goto out;
        }
        const char *shard = json_string_value(v);
        if (!plain_name(shard)) {
            s = vs_err_set(err, VS_BAD_INPUT,
                           "%s: weight_map['%s']: shard '%.200s' is not a plain file name in the folder",
                           ipath, name, shard);
            goto out;
        }
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, shard) >= sizeof path) {
            s = vs_err_set(err, VS_BAD_INPUT, "%s: shard path too long", ipath);
            goto out;
        }
        bool seen = false;
        for (int i = 0; i < st->nfiles && !seen; i++) seen = strcmp(st->files[i].path, path) == 0;
        if (seen) continue;
        s = add_file(st, path, err);
        if (s) {
            if (s == VS_NOT_FOUND)
                vs_err_prefix(err, "%s: shard of tensor '%s' is missing", ipath, name);
            goto out;
        }
    }
    s = finish(st, err);
    if (s) goto out;
    /* Each tensor the index names must be in the shard it names. */
    json_object_foreach(wm, name, v) {
        const struct vs_st_tensor *t = vs_st_find(st, name);
        const char *shard = json_string_value(v);
        const char *fp = t ? st->files[t->file].path : NULL;
        size_t fl = fp ? strlen(fp) : 0, sl = strlen(shard);
        if (!t || fl <= sl || strcmp(fp + fl - sl, shard) != 0 || fp[fl - sl - 1] != '/') {
            s = vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': the index places it in %s, which lacks it",
                           ipath, name, shard);
            goto out;
        }
    }
out:
    json_decref(idx);
    return s;
}

enum vs_status vs_st_open_dir(const char *dir, struct vs_st **out, struct vs_err *err)
{
    char ipath[4096], spath[4096];
    if ((size_t)snprintf(ipath, sizeof ipath, "%s/model.safetensors.index.json", dir) >= sizeof ipath ||
        (size_t)snprintf(spath, sizeof spath, "%s/model.safetensors", dir) >= sizeof spath)
        return vs_err_set(err, VS_BAD_INPUT, "%s: path too long", dir);
    struct stat sb;
    bool have_index = stat(ipath, &sb) == 0;
    if (!have_index && stat(spath, &sb) != 0)
        return vs_err_set(err, VS_NOT_FOUND,
                          "%s: no model.safetensors or model.safetensors.index.json "
                          "(PyTorch .bin checkpoints are not supported; convert to safetensors)", dir);
    if (!have_index) return vs_st_open_file(spath, out, err);

    struct vs_st *st = calloc(1, sizeof *st);
    if (!st) return vs_err_set(err, VS_NOMEM, "out of memory");
    enum vs_status s = open_index(st, dir, ipath, err);
    if (s) {
        vs_st_close(st);
        return s;
    }
    *out = st;
    return VS_OK;
}

/* ---- lookups ------------------------------------------------------------ */

const struct vs_st_tensor *vs_st_find(const struct vs_st *st, const char *name)
{
    size_t lo = 0, hi = st->nt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->t[mid].name);
        if (c == 0) return &st->t[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

size_t vs_st_count(const struct vs_st *st) { return st->nt; }

const struct vs_st_tensor *vs_st_at(const struct vs_st *st, size_t i)
{
    return i < st->nt ? &st->t[i] : NULL;
}

int vs_st_num_files(const struct vs_st *st) { return st->nfiles + (st->index_path != NULL); }

const char *vs_st_file(const struct vs_st *st, int i)
{
    if (st->index_path) {
        if (i == 0) return st->index_path;
        i--;
    }
    return i >= 0 && i < st->nfiles ? st->files[i].path : NULL;
}

const char *vs_st_path_of(const struct vs_st *st, const struct vs_st_tensor *t)
{
    return st->files[t->file].path;
}

uint64_t vs_st_data_bytes(const struct vs_st *st) { return st->data_bytes; }

const char *vs_st_metadata(const struct vs_st *st, const char *key)
{
    if (st->nfiles == 0 || !st->files[0].metadata) return NULL;
    return json_string_value(json_object_get(st->files[0].metadata, key));
}

/* ---- dtype conversion --------------------------------------------------- */

/* IEEE half -> float, exact for every input (subnormals, inf, NaN). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);          /* inf / NaN */
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;                                   /* +-0 */
        } else {                                           /* subnormal: normalize */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
        }
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void vs_st_to_f32(enum vs_st_dtype d, const uint8_t *src, size_t n, float *dst)
{
    switch (d) {
    case VS_ST_F32:
        memcpy(dst, src, n * 4);
        break;
    case VS_ST_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case VS_ST_BF16:                    /* bf16 = the top half of a float */
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &bits, 4);
        }
        break;
    default:
        VS_ASSERT(!"vs_st_to_f32: only F32, F16, BF16");
    }
}

uint16_t vs_st_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);     /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

uint16_t vs_st_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;            /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;           /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                 /* below 2^-14: subnormal or 0 */
        if (a < 0x33000000u) return sign;                  /* < 2^-25 rounds to 0 (tie at 2^-25 -> even 0) */
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);                  /* 14 .. 24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);             /* round mantissa to 10 bits */
    return sign | (uint16_t)((r - 0x38000000u) >> 13);     /* rebias 127 -> 15 */
}
