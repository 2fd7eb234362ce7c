/* cli.h: helpers shared by the subcommands — the model options every
 * command that loads a model accepts, reading + decoding + preprocessing an
 * image file, and printing errors.  Main thread only. */
#ifndef VS_CLI_CLI_H
#define VS_CLI_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/vs.h"
#include "image/image.h"
#include "model/model.h"
#include "options.h"

/* Values of the model-related options (filled by vs_options_parse through
 * the rows that VS_CLI_MODEL_OPTIONS expands to). */
struct vs_cli_model_args {
    const char *model;
    const char *device;
    const char *precision;
    int threads;
    size_t max_pixels;
    bool prepack;       /* not an option: set by long-running commands (bench) */
};

/* --model alone: for commands that read a checkpoint but compute nothing. */
#define VS_CLI_MODEL_SPEC_OPTION(a)                                                   \
    {"model", 'm', "VITSERVE_MODEL", VS_OPT_STRING, &(a).model, 0, -1,                \
     "google/vit-base-patch16-224", "DIR|ORG/NAME[@REV]",                             \
     "checkpoint folder (HF snapshot layout) or hub id (from the local HF cache, "    \
     "downloaded into it when missing)", NULL}

/* --model plus where and how to compute. */
#define VS_CLI_MODEL_OPTIONS(a)                                                       \
    VS_CLI_MODEL_SPEC_OPTION(a),                                                      \
    {"device", 0, "VITSERVE_DEVICE", VS_OPT_STRING, &(a).device, 0, -1, "auto",       \
     "DEV", "compute device: auto, cpu, cuda or cuda:N", NULL},                        \
    {"precision", 0, "VITSERVE_PRECISION", VS_OPT_STRING, &(a).precision, 0, -1,      \
     "fp32", "P", "numeric precision", "fp32|int8|fp16|bf16"},                         \
    {"threads", 't', "VITSERVE_THREADS", VS_OPT_INT, &(a).threads, 0, 1024, "0",      \
     "N", "compute threads (0 = all cores)", NULL}

#define VS_CLI_PIXELS_OPTION(a)                                                       \
    {"max-pixels", 0, "VITSERVE_MAX_PIXELS", VS_OPT_SIZE, &(a).max_pixels, 1,         \
     1e12, "89478485", "N", "refuse images declaring more pixels than this", NULL}

/* Turns the parsed args into model options (device/precision strings
 * parsed; a bad value prints why and returns false). */
bool vs_cli_model_opts(const char *cmd, const struct vs_cli_model_args *a,
                       struct vs_model_opts *o);

/* Loads the model, printing "vitserve CMD: <error>" on failure. */
struct vs_model *vs_cli_load_model(const char *cmd, const struct vs_cli_model_args *a,
                                   int max_batch, bool load_weights);

/* Reads and decodes an image file ("-" = stdin). */
enum vs_status vs_cli_decode_file(const char *path, uint64_t max_pixels,
                                  struct vs_image *img, struct vs_err *err);

/* Size in floats of one preprocessed image for this model. */
size_t vs_cli_input_floats(const struct vs_model_info *mi);

/* A JSON string for text that may not be UTF-8 (file names are bytes; a
 * message may be cut inside a character): json_string(), or with every
 * invalid byte as U+FFFD where json_string() refuses it.  NULL only when
 * out of memory. */
json_t *vs_cli_json_string(const char *s);

/* vs_image_preprocess() into out[vs_cli_input_floats(mi)], after checking
 * that the result has the model's size: with "do_resize": false the image
 * keeps its own size, which must then be image_size (else VS_BAD_INPUT,
 * and out is never written past its end). */
enum vs_status vs_cli_preprocess(const struct vs_image *img, const struct vs_model_info *mi,
                                 float *out, struct vs_err *err);

#endif
