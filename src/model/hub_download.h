/* hub_download.h: fetching a checkpoint from the Hugging Face Hub into the
 * local cache, in huggingface_hub's layout so that Python tools and
 * vitserve share one cache both ways.  Private to src/model/ (hub.c calls
 * it when a hub id is not in the cache and HF_HUB_OFFLINE is not set). */
#ifndef VS_MODEL_HUB_DOWNLOAD_H
#define VS_MODEL_HUB_DOWNLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/vs.h"

/* Downloads config.json (checked to be a ViT classifier before any weight
 * is fetched), preprocessor_config.json (optional) and model.safetensors
 * or model.safetensors.index.json + its shards of repo ("org/name") at rev
 * into root (the hub cache folder), then writes the snapshot folder's path
 * into dir.  Honours HF_ENDPOINT and HF_TOKEN (or the token file).
 * Errors: VS_NOT_FOUND (404: repo, revision or file), VS_UNSUPPORTED (not
 * a ViT classifier / no safetensors), VS_IO (network, 401/403 with a hint
 * about tokens, checksum mismatch, disk). */
enum vs_status vs_hub_download(const char *root, const char *repo, const char *rev,
                               char *dir, size_t dir_size, struct vs_err *err);

/* root/models--<org>--<name> ('/' of repo becomes "--") into out[n]; false
 * when it does not fit. */
bool vs_hub_repo_dir(const char *root, const char *repo, char *out, size_t n);

/* The endpoint in use ($HF_ENDPOINT or https://huggingface.co). */
const char *vs_hub_endpoint(void);

#endif
