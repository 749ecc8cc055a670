"""Load an optimised BLAS under MLX on Linux before `mlx.core` is imported.

MLX's Linux CPU wheel links the reference BLAS: a 2048² f32 matmul takes ~3 s instead of
~0.09 s. MLX resolves `cblas_*` dynamically, so an OpenBLAS loaded first with RTLD_GLOBAL
wins symbol resolution. macOS uses Accelerate and needs nothing.
"""

import ctypes
import ctypes.util
import glob
import os
import sys
import sysconfig


def _candidates():
    explicit = os.environ.get("EDGE_REPAIR_OPENBLAS")
    if explicit:
        yield explicit
    site = sysconfig.get_paths()["purelib"]
    # pip's cmeel-openblas (needs a system libgfortran.so.5) and the distribution's OpenBLAS.
    yield from sorted(glob.glob(os.path.join(site, "cmeel.prefix", "lib", "libopenblas.so.0")))
    found = ctypes.util.find_library("openblas")
    if found:
        yield found


def preload_blas() -> str | None:
    """Load the first usable OpenBLAS globally; return its path, or None if none was loaded."""
    if sys.platform != "linux" or "mlx.core" in sys.modules:
        return None
    if os.environ.get("EDGE_REPAIR_OPENBLAS") == "off":
        return None
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))
    for path in _candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
        except OSError:
            continue
    return None


def loaded_blas() -> str:
    """Name the BLAS library mapped into this process (for benchmarks and `doctor`)."""
    if sys.platform == "darwin":
        return "Accelerate"
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "blas" in line.lower()}
    except OSError:
        return "unknown"
    openblas = sorted(p for p in libs if "openblas" in p)
    return openblas[0] if openblas else "reference BLAS (slow; see README: Linux speed-up)"
