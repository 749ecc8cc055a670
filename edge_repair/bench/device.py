"""What the numbers were measured on, and the process's memory as the OS sees it."""

import importlib.metadata
import os
import platform
import resource
import sys
from pathlib import Path

import mlx.core as mx


def peak_rss_bytes() -> int:
    """The process-lifetime peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    """Resident set size right now (Linux: /proc/self/statm); None where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info(model_path: Path | None = None) -> dict:
    from edge_repair import native
    from edge_repair._blas import loaded_blas

    kernel = "off" if os.environ.get("EDGE_REPAIR_KERNEL", "").lower() == "off" else (
        "native" if native.MODULE in sys.modules else native.failure() or "not loaded")
    if kernel == "native":
        problems = sys.modules[native.MODULE].fused_problems
        fused = {op: "native" if native.fused_op(op) else problems.get(op, "off") for op in native.FUSED}
    else:
        fused = {op: kernel for op in native.FUSED}
    info = {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "mlx": mx.__version__, "mlx_lm": _version("mlx-lm"),
        "numpy": _version("numpy"), "blas": loaded_blas(), "metal": bool(mx.metal.is_available()),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "decoding_kernel": kernel,  # cpu_quantized: decoding steps from the quantized weights
        "fused_ops": fused,  # cpu_fused, cpu_swiglu: RoPE, RMSNorm and SwiGLU as one native op each
    }
    if model_path is not None:
        files = {p.name: p.stat().st_size for p in sorted(Path(model_path).iterdir()) if p.is_file()}
        info["model"] = {"path": str(model_path), "files": files, "bytes": sum(files.values())}
    return info
