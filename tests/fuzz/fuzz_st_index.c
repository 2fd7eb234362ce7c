/* fuzz_st_index.c: vs_st_open_dir() with an arbitrary
 * model.safetensors.index.json — the sharded-checkpoint path: the index
 * JSON, shard names (must be plain names inside the folder), each shard
 * opened once, names unique across shards, and every tensor present in
 * the shard the index names.
 *
 * A scratch folder is made once per process (mkdtemp under $TMPDIR or
 * /tmp, removed at exit) holding two small valid shards,
 * model-00001-of-00002.safetensors (tensors "a" F32 [2], "b" F16 [2,2])
 * and model-00002-of-00002.safetensors ("c" BF16 [3], "a2" U8 [0]),
 * plus a third, dup.safetensors, that also holds "a"; each input is
 * written as the index.  Oracle on success: every weight_map name is
 * found and lives in the shard named for it (path suffix), nothing else
 * is loaded that no shard holds; on failure a status and a message.
 * Called from one thread.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzz_util.h"
#include "model/safetensors.h"

static char g_dir[256];

static void cleanup(void)
{
    static const char *const names[] = {
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "dup.safetensors", "model.safetensors.index.json",
    };
    char p[512];
    for (size_t i = 0; i < VS_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

static void write_file(const char *name, const void *data, size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    VSF_CHECK(fd >= 0, "cannot create %s", p);
    const uint8_t *b = data;
    while (len) {
        ssize_t w = write(fd, b, len);
        VSF_CHECK(w > 0, "cannot write %s", p);
        b += w;
        len -= (size_t)w;
    }
    close(fd);
}

/* A safetensors file: 8-byte LE header length, header, data bytes. */
static void write_shard(const char *name, const char *header, size_t data_len)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    uint8_t *buf = calloc(1, n);
    VSF_CHECK(buf != NULL, "no memory");
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (uint8_t)(i * 37 + 11);
    write_file(name, buf, n);
    free(buf);
}

static void setup(void)
{
    const char *tmp = getenv("VS_TMP");
    if (!tmp || !*tmp) tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/vsf-st-index-XXXXXX", tmp);
    VSF_CHECK(mkdtemp(g_dir) != NULL, "mkdtemp %s failed", g_dir);
    atexit(cleanup);
    write_shard("model-00001-of-00002.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
                "\"__metadata__\":{\"format\":\"pt\"}}", 16);
    write_shard("model-00002-of-00002.safetensors",
                "{\"c\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                "\"a2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[6,6]}}", 6);
    write_shard("dup.safetensors",
                "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_dir[0]) setup();
    write_file("model.safetensors.index.json", data, size);

    struct vs_st *st = (struct vs_st *)(uintptr_t)0x5A5A5A5Au;
    struct vs_err err = { 0 };
    enum vs_status s = vs_st_open_dir(g_dir, &st, &err);
    if (s != VS_OK) {
        vsf_check_failure(s, &err, "vs_st_open_dir");
        VSF_CHECK(st == (struct vs_st *)(uintptr_t)0x5A5A5A5Au, "out written on failure");
        return 0;
    }
    json_t *idx = json_loadb((const char *)data, size, 0, NULL);
    json_t *wm = json_object_get(idx, "weight_map");
    VSF_CHECK(json_is_object(wm), "accepted an index without a weight_map object");
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const struct vs_st_tensor *t = vs_st_find(st, name);
        VSF_CHECK(t != NULL, "weight_map names '%s', not loaded", name);
        const char *shard = json_string_value(v), *path = vs_st_path_of(st, t);
        VSF_CHECK(shard && path, "'%s': no shard/path", name);
        size_t pl = strlen(path), sl = strlen(shard);
        VSF_CHECK(pl > sl && path[pl - sl - 1] == '/' && strcmp(path + pl - sl, shard) == 0,
                  "'%s' loaded from %s, index says %s", name, path, shard);
        vsf_sink(vsf_touch(t->data, t->nbytes));
    }
    /* at most the index, the three shards and the index read as a shard */
    VSF_CHECK(vs_st_num_files(st) >= 1 && vs_st_num_files(st) <= 5, "%d files",
              vs_st_num_files(st));
    json_decref(idx);
    vs_st_close(st);
    return 0;
}
