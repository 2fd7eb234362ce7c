"""The CUDA plugin loader refuses a libvitserve_cuda.so from another build.

The CUDA backend is a dlopen'ed plugin handing over its ops table by
address (src/model/cuda_plugin.c).  A plugin built from another version of
vitserve would have its slots misread, so the loader checks the plugin's
vs_cuda_plugin_abi against its own VS_BACKEND_ABI.  This test compiles two
fake plugins with the system C compiler (no CUDA needed): one exporting a
wrong ABI number, one without the symbol, and checks that `classify
--device cuda` fails with a message saying so (and never calls into them:
their table slots would crash).  Skipped for a build without CUDA support.
"""
import os
import shutil

import vstest as t

IMG = os.path.join(t.FIXTURE, "images", "a01_chelsea_baseline420.jpg")
MODEL = os.path.join(t.FIXTURE, "model")

code, _, err = t.vitserve("classify", "--device", "cuda", "--model", MODEL, IMG,
                          env={"VITSERVE_CUDA_PLUGIN": "/nonexistent/libvitserve_cuda.so"})
if "no CUDA backend" in err:
    t.skip("this build has no CUDA backend")
cc = shutil.which("cc") or shutil.which("gcc")
if not cc:
    t.skip("no C compiler to build the fake plugins")

FAKE = r"""
/* every slot a NULL: the loader must refuse before touching any */
const void *vs_cuda_plugin_backend[16];
int vs_cuda_plugin_device_count(void) { return 1; }
%s
"""
cases = [
    ("wrong-abi", "const unsigned vs_cuda_plugin_abi = 7u;", "built from another version of vitserve"),
    ("no-abi", "", "lacks its entry points"),
]
for name, extra, want in cases:
    src = os.path.join(t.TMP, f"fake_plugin_{name}.c")
    so = os.path.join(t.TMP, f"fake_plugin_{name}.so")
    with open(src, "w") as f:
        f.write(FAKE % extra)
    rc, _, cerr = t.run([cc, "-shared", "-fPIC", "-o", so, src])
    t.check(rc == 0, f"compiling the fake plugin {name}: {cerr}")
    code, out, err = t.vitserve("classify", "--device", "cuda", "--model", MODEL, IMG,
                                env={"VITSERVE_CUDA_PLUGIN": so})
    t.check(code != 0, f"{name}: classify --device cuda must fail (exit {code}, {out!r})")
    t.check(want in err, f"{name}: stderr names the problem ({want!r}): {err!r}")
    t.check("Segmentation" not in err and code > 0, f"{name}: a clean exit, not a crash ({code})")
    # auto falls back to the CPU: the fake plugin is not used at all
    code, out, err = t.vitserve("classify", "--device", "auto", "--model", MODEL, IMG,
                                env={"VITSERVE_CUDA_PLUGIN": so})
    t.check(code == 0 and out.strip(), f"{name}: --device auto still classifies on the CPU: {err!r}")
t.done()
