/* peak.h: this machine's measured fp32 FMA peak (see peak.c). */
#ifndef VS_CLI_PEAK_H
#define VS_CLI_PEAK_H

/* GFLOP/s of `threads` threads running register-only vector FMAs for
 * ~150 ms; *isa (optional) names the instruction set used.  0 when the
 * CPU has no FMA vector unit this code knows. */
double vs_peak_fp32_gflops(int threads, const char **isa);

#endif
