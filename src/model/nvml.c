/* nvml.c: GPU utilisation from NVML (libnvidia-ml, shipped with the NVIDIA
 * driver), loaded with dlopen at first use so that the binary neither links
 * nor needs it: without a driver the utilisation is simply unknown.
 * Thread-safe (pthread_once for loading; NVML calls are thread-safe). */
#include "nvml.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

/* The few NVML declarations used (nvml.h is not packaged in Debian main). */
typedef struct nvml_device *nvml_device_t;
struct nvml_utilization { unsigned int gpu, memory; };
typedef int (*nvml_init_fn)(void);
typedef int (*nvml_by_pci_fn)(const char *, nvml_device_t *);
typedef int (*nvml_util_fn)(nvml_device_t, struct nvml_utilization *);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static nvml_by_pci_fn by_pci;
static nvml_util_fn get_util;

static void load(void)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    nvml_init_fn init = (nvml_init_fn)dlsym(h, "nvmlInit_v2");
    by_pci = (nvml_by_pci_fn)dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2");
    get_util = (nvml_util_fn)dlsym(h, "nvmlDeviceGetUtilizationRates");
    if (!init || !by_pci || !get_util || init() != 0) {
        by_pci = NULL;
        get_util = NULL;
    }
}

double vs_nvml_utilization(const char *pci_bus_id)
{
    if (!pci_bus_id || !pci_bus_id[0]) return -1;
    pthread_once(&once, load);
    if (!by_pci || !get_util) return -1;
    nvml_device_t dev;
    struct nvml_utilization u;
    if (by_pci(pci_bus_id, &dev) != 0 || get_util(dev, &u) != 0) return -1;
    return u.gpu / 100.0;
}
