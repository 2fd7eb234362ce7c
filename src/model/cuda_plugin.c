/* cuda_plugin.c: the CUDA backend, loaded on demand.
 *
 * backend_cuda.cu is built as a plugin (libvitserve_cuda.so) linking the CUDA
 * runtime and cuBLAS.  Linking those into the binary cost ~240 ms at every
 * exec here (mapping and relocating ~600 MB of libraries) and made the binary
 * unusable where they are not installed.  This file provides the symbols the
 * rest of the model module uses (vs_backend_cuda, vs_cuda_device_count) as
 * thin trampolines that dlopen the plugin the first time a CUDA device is
 * asked about.  Search order: $VITSERVE_CUDA_PLUGIN; next to the executable;
 * <exe dir>/../lib/vitserve/; the build tree (VS_CUDA_PLUGIN_PATH); the
 * dynamic linker's own search path.  Loading is thread-safe (pthread_once).
 */
#ifdef VS_HAVE_CUDA
#include "backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLUGIN_NAME "libvitserve_cuda.so"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const struct vs_backend_ops *plugin;
static int (*plugin_count)(void);
static char load_error[512] = "not loaded";

static void *try_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) snprintf(load_error, sizeof load_error, "%s", dlerror());
    return h;
}

static void load(void)
{
    char exe[PATH_MAX], path[PATH_MAX + 64];
    void *h = NULL;
    const char *env = getenv("VITSERVE_CUDA_PLUGIN");
    if (env && *env) h = try_open(env);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!h && n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(path, sizeof path, "%s/" PLUGIN_NAME, exe);
        if (access(path, F_OK) == 0) h = try_open(path);
        snprintf(path, sizeof path, "%s/../lib/vitserve/" PLUGIN_NAME, exe);
        if (!h && access(path, F_OK) == 0) h = try_open(path);
    }
#ifdef VS_CUDA_PLUGIN_PATH
    if (!h && access(VS_CUDA_PLUGIN_PATH, F_OK) == 0) h = try_open(VS_CUDA_PLUGIN_PATH);
#endif
    if (!h) h = try_open(PLUGIN_NAME);
    if (!h) return;
    plugin = dlsym(h, "vs_cuda_plugin_backend");
    *(void **)&plugin_count = dlsym(h, "vs_cuda_plugin_device_count");
    const unsigned *abi = dlsym(h, "vs_cuda_plugin_abi");
    if (!plugin || !plugin_count || !abi) {
        snprintf(load_error, sizeof load_error, PLUGIN_NAME " lacks its entry points "
                 "(built from another version of vitserve?)");
    } else if (*abi != VS_BACKEND_ABI) {
        snprintf(load_error, sizeof load_error, PLUGIN_NAME " was built from another version "
                 "of vitserve (backend interface %#x, this binary %#x): rebuild or reinstall it "
                 "with this binary", *abi, (unsigned)VS_BACKEND_ABI);
    } else {
        return;
    }
    plugin = NULL;
    plugin_count = NULL;
    dlclose(h);   /* refused: none of its code is used */
}

static bool loaded(void)
{
    pthread_once(&once, load);
    return plugin != NULL;
}

/* Without the NVIDIA driver there can be no device: answer without
 * loading half a gigabyte of CUDA libraries (the common CPU-only case). */
static bool driver_present(void)
{
    return access("/dev/nvidiactl", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0 ||
           getenv("VITSERVE_CUDA_PLUGIN") != NULL;
}

int vs_cuda_device_count(void)
{
    if (!driver_present()) {
        snprintf(load_error, sizeof load_error, "no NVIDIA driver on this machine");
        return 0;
    }
    if (!loaded()) return 0;
    int n = plugin_count();
    if (n == 0) snprintf(load_error, sizeof load_error, "the CUDA runtime reports no device");
    return n;
}

const char *vs_cuda_unavailable_reason(void)
{
    return load_error;
}

static enum vs_status t_create(const struct vs_vit_config *cfg, const struct vs_vit_weights *w,
                               const struct vs_backend_opts *opts, void **ctx, struct vs_err *err)
{
    if (!loaded())
        return vs_err_set(err, VS_UNSUPPORTED, "the CUDA backend (" PLUGIN_NAME
                          ") could not be loaded: %s", load_error);
    return plugin->create(cfg, w, opts, ctx, err);
}

/* A context only exists once create() succeeded, so the plugin is loaded. */
static enum vs_status t_forward(void *ctx, const float *pixels, int n, float *logits,
                                struct vs_err *err)
{
    return plugin->forward(ctx, pixels, n, logits, err);
}

static enum vs_status t_forward_rows(void *ctx, const float *const *rows, int n,
                                     float *logits, struct vs_err *err)
{
    return plugin->forward_rows(ctx, rows, n, logits, err);
}

static const char *t_device_name(void *ctx)
{
    return plugin->device_name ? plugin->device_name(ctx) : NULL;
}

static void t_destroy(void *ctx)
{
    if (plugin) plugin->destroy(ctx);
}

static void t_status(void *ctx, struct vs_device_status *out, char *pci_bus_id)
{
    if (plugin->status) plugin->status(ctx, out, pci_bus_id);
}

const struct vs_backend_ops vs_backend_cuda = {
    .name = "cuda",
    .create = t_create,
    .forward = t_forward,
    .forward_rows = t_forward_rows,   /* backend_cuda.cu always provides it */
    .device_name = t_device_name,
    .destroy = t_destroy,
    .status = t_status,
};
#else
/* Without CUDA at build time there is nothing to load. */
typedef int vs_cuda_plugin_unused_t;
#endif
