/* fuzz_safetensors.c: vs_st_open_file() (src/model/safetensors.c) on
 * arbitrary bytes: the 8-byte header length, the JSON header, every tensor
 * entry's dtype/shape/data_offsets validation and the overlap check.
 *
 * The reader maps a file by path, so the input is written to a memfd
 * (an anonymous in-memory file) and opened as /proc/self/fd/N; nothing
 * touches the disk.  Oracle on success, checked against the driver's own
 * jansson parse of the same header: every tensor's dtype, rank, shape,
 * numel and nbytes agree with its entry, numel * dtype size == nbytes,
 * vs_st_find() finds it, its data pointer addresses exactly bytes
 * [8 + N + begin, 8 + N + end) of the input (same bytes, one common
 * base), and vs_st_data_bytes() is the sum; F32/F16/BF16 tensors are
 * converted with vs_st_to_f32 (reads every byte).  On failure: a status
 * and a message, *out untouched.
 * Called from one thread.
 */
#define _GNU_SOURCE            /* memfd_create */
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzz_util.h"
#include "model/safetensors.h"

/* Writes data to a fresh memfd; returns the fd (path in *path) or -1. */
static int to_memfd(const uint8_t *data, size_t size, char path[64])
{
    int fd = memfd_create("vsf-safetensors", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) { close(fd); return -1; }
        done += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

static void check_tensors(const struct vs_st *st, const uint8_t *data, size_t size)
{
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    VSF_CHECK(hlen <= size - 8, "accepted header length %llu in a %zu-byte file",
              (unsigned long long)hlen, size);
    const uint8_t *section = data + 8 + hlen;
    const uint64_t section_len = size - 8 - hlen;
    json_t *h = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, NULL);
    VSF_CHECK(json_is_object(h), "accepted a header that is not a JSON object");

    const uint8_t *base = NULL;   /* mapping address of data-section byte 0 */
    uint64_t sum = 0;
    for (size_t i = 0; i < vs_st_count(st); i++) {
        const struct vs_st_tensor *t = vs_st_at(st, i);
        VSF_CHECK(t && t->name, "tensor %zu missing", i);
        VSF_CHECK(vs_st_find(st, t->name) == t, "vs_st_find('%s') finds another entry", t->name);
        json_t *e = json_object_get(h, t->name);
        VSF_CHECK(json_is_object(e) && strcmp(t->name, "__metadata__") != 0,
                  "tensor '%s' is not an entry of the header", t->name);
        VSF_CHECK((int)t->dtype >= 0 && t->dtype < VS_ST_DTYPE_COUNT, "dtype %d", (int)t->dtype);
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        VSF_CHECK(dt && strcmp(vs_st_dtype_name(t->dtype), dt) == 0,
                  "'%s': dtype %s", t->name, vs_st_dtype_name(t->dtype));
        json_t *shape = json_object_get(e, "shape");
        VSF_CHECK(t->ndim >= 0 && t->ndim <= VS_ST_MAX_DIMS &&
                  (size_t)t->ndim == json_array_size(shape), "'%s': ndim %d", t->name, t->ndim);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            VSF_CHECK(t->shape[d] >= 0 &&
                      t->shape[d] == json_integer_value(json_array_get(shape, (size_t)d)),
                      "'%s': shape[%d] = %lld", t->name, d, (long long)t->shape[d]);
            numel *= (uint64_t)t->shape[d];
        }
        VSF_CHECK(numel == t->numel, "'%s': numel %llu, shape says %llu", t->name,
                  (unsigned long long)t->numel, (unsigned long long)numel);
        VSF_CHECK(t->numel * vs_st_dtype_size(t->dtype) == t->nbytes,
                  "'%s': %llu elements of %zu bytes in %llu bytes", t->name,
                  (unsigned long long)t->numel, vs_st_dtype_size(t->dtype),
                  (unsigned long long)t->nbytes);
        json_t *off = json_object_get(e, "data_offsets");
        uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0));
        uint64_t en = (uint64_t)json_integer_value(json_array_get(off, 1));
        VSF_CHECK(b <= en && en <= section_len && en - b == t->nbytes,
                  "'%s': offsets [%llu, %llu] vs nbytes %llu, section %llu", t->name,
                  (unsigned long long)b, (unsigned long long)en,
                  (unsigned long long)t->nbytes, (unsigned long long)section_len);
        if (!base) base = t->data - b;
        VSF_CHECK(t->data == base + b, "'%s': data pointer not at its offset", t->name);
        VSF_CHECK(memcmp(t->data, section + b, t->nbytes) == 0,
                  "'%s': data differs from the file's bytes", t->name);
        VSF_CHECK(vs_st_path_of(st, t) != NULL, "'%s': no path", t->name);
        if ((t->dtype == VS_ST_F32 || t->dtype == VS_ST_F16 || t->dtype == VS_ST_BF16) &&
            t->numel > 0 && t->numel <= (1u << 20)) {
            float *f = malloc(t->numel * sizeof *f);
            VSF_CHECK(f != NULL, "no memory");
            vs_st_to_f32(t->dtype, t->data, t->numel, f);
            free(f);
        }
        sum += t->nbytes;
    }
    VSF_CHECK(sum == vs_st_data_bytes(st), "data bytes %llu, tensors sum to %llu",
              (unsigned long long)vs_st_data_bytes(st), (unsigned long long)sum);
    VSF_CHECK(vs_st_num_files(st) == 1 && vs_st_file(st, 0) != NULL, "files");
    vsf_sink((uint64_t)(uintptr_t)vs_st_metadata(st, "format"));
    json_decref(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = to_memfd(data, size, path);
    VSF_CHECK(fd >= 0, "memfd_create/write failed");
    struct vs_st *st = (struct vs_st *)(uintptr_t)0xA5A5A5A5u;
    struct vs_err err = { 0 };
    enum vs_status s = vs_st_open_file(path, &st, &err);
    close(fd);                     /* the mapping (if any) keeps the file */
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_st_open_file");
        VSF_CHECK(s == VS_BAD_INPUT || s == VS_TOO_LARGE || s == VS_NOMEM,
                  "unexpected status %s: %s", vs_status_name(s), err.msg);
        VSF_CHECK(st == (struct vs_st *)(uintptr_t)0xA5A5A5A5u, "out written on failure");
        return 0;
    }
    check_tensors(st, data, size);
    vs_st_close(st);
    return 0;
}
