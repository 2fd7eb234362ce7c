/* safetensors.h: read-only access to one checkpoint's safetensors files
 * (a single model.safetensors, or the shards listed by
 * model.safetensors.index.json).  Private to src/model/.
 *
 * Opening validates every header completely before anything is used:
 * header length bounded and inside the file, JSON object, each tensor's
 * dtype known, shape non-negative, shape x dtype size == end - begin,
 * offsets inside the data section, no two tensors overlapping, no tensor
 * named twice (in one file or across shards).  The files stay mapped
 * read-only (mmap) until vs_st_close(), so tensor data pointers are valid
 * as long as the set is open and cost no memory until touched.
 *
 * Threads: a set is built and closed by one thread; lookups are read-only
 * and may run from any thread once opened.
 */
#ifndef VS_MODEL_SAFETENSORS_H
#define VS_MODEL_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>

#include "common/vs.h"

/* Largest header accepted (the format's reference reader uses 100 MB). */
#define VS_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define VS_ST_MAX_DIMS 8
/* Largest model.safetensors.index.json read (as config.json: a real index
 * is a few hundred KiB even for the largest checkpoints; jansson would
 * spend ~10x the file's size in memory, and seconds, on a huge one). */
#define VS_ST_MAX_INDEX_BYTES ((long long)16 << 20)

/* VS_TOO_LARGE, naming path and its size, when the index file at path is
 * over VS_ST_MAX_INDEX_BYTES; VS_OK otherwise (also when it cannot be
 * stat'ed: reading it then reports that).  Every reader of an index calls
 * this before parsing it. */
enum vs_status vs_st_check_index_size(const char *path, struct vs_err *err);

enum vs_st_dtype {
    VS_ST_F64, VS_ST_F32, VS_ST_F16, VS_ST_BF16,
    VS_ST_I64, VS_ST_I32, VS_ST_I16, VS_ST_I8,
    VS_ST_U64, VS_ST_U32, VS_ST_U16, VS_ST_U8,
    VS_ST_BOOL, VS_ST_F8_E4M3, VS_ST_F8_E5M2,
    VS_ST_DTYPE_COUNT
};

struct vs_st_tensor {
    const char *name;
    enum vs_st_dtype dtype;
    int ndim;
    int64_t shape[VS_ST_MAX_DIMS];
    uint64_t numel;           /* product of shape (1 for a scalar) */
    uint64_t nbytes;          /* end - begin */
    const uint8_t *data;      /* inside the mapping; may be misaligned */
    int file;                 /* index into the set's files */
};

struct vs_st;

/* "F32" for VS_ST_F32, ... */
const char *vs_st_dtype_name(enum vs_st_dtype d);
/* Bytes per element. */
size_t vs_st_dtype_size(enum vs_st_dtype d);

/* Opens the weights of the snapshot folder dir: model.safetensors.index.json
 * when present (each shard a plain file name inside dir), else
 * model.safetensors.  VS_NOT_FOUND when neither exists. */
enum vs_status vs_st_open_dir(const char *dir, struct vs_st **out,
                              struct vs_err *err);

/* Opens one safetensors file. */
enum vs_status vs_st_open_file(const char *path, struct vs_st **out,
                               struct vs_err *err);

/* NULL is a no-op. */
void vs_st_close(struct vs_st *st);

/* The tensor called name, or NULL. */
const struct vs_st_tensor *vs_st_find(const struct vs_st *st, const char *name);

size_t vs_st_count(const struct vs_st *st);
const struct vs_st_tensor *vs_st_at(const struct vs_st *st, size_t i);

/* Files read (full paths): the index first when there is one, then the
 * weight files in the order first referenced. */
int vs_st_num_files(const struct vs_st *st);
const char *vs_st_file(const struct vs_st *st, int i);
/* The path of the file holding t. */
const char *vs_st_path_of(const struct vs_st *st, const struct vs_st_tensor *t);
/* Sum of all tensors' data bytes. */
uint64_t vs_st_data_bytes(const struct vs_st *st);
/* A value of the first weight file's __metadata__, or NULL. */
const char *vs_st_metadata(const struct vs_st *st, const char *key);

/* Converts n elements of an F16 / BF16 / F32 buffer (any alignment,
 * little-endian) to float. */
void vs_st_to_f32(enum vs_st_dtype d, const uint8_t *src, size_t n, float *dst);

/* Rounds a float to the nearest F16 / BF16 value (round-to-nearest-even)
 * and returns the bit pattern; used by the checkpoint generator and tests. */
uint16_t vs_st_f32_to_f16(float f);
uint16_t vs_st_f32_to_bf16(float f);

#endif
