/* nvml.h: GPU utilisation through NVML when the driver provides it.
 * Private to src/model/. */
#ifndef VS_MODEL_NVML_H
#define VS_MODEL_NVML_H

/* Busy share 0..1 of the GPU at this PCI bus id over NVML's last sample
 * period; -1 when NVML or the device is not available. */
double vs_nvml_utilization(const char *pci_bus_id);

#endif
