"""Native CPU kernels, compiled on first use for this machine and kept in the models cache.

MLX compiles its own fused CPU loops the same way (with the system's C++ compiler, at run
time). An MLX extension must share MLX's nanobind ABI and domain ("mlx"): it is built against
the installed `mlx` headers and library with the `nanobind` package's sources. A build that
fails (no compiler, an ABI mismatch) leaves a note beside it, so the next load does not retry
the same build; decoding then reads the f32 weights, as before.
"""

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("quantized_matmul.cpp")
MODULE = "_quantized_matmul"
BUILD_SECONDS = 600


def quantized_matmul():
    """The compiled kernel module, or None (with the reason in the build directory's note)."""
    if os.environ.get("EDGE_REPAIR_KERNEL", "").lower() == "off":
        return None
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    directory = _build_dir()
    if directory is None:
        return None
    library = directory / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not library.is_file() and not (directory / "failed.txt").is_file():
        _build(library, _toolchain())
    if not library.is_file():
        return None
    spec = importlib.util.spec_from_file_location(MODULE, library)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        _give_up(directory, f"cannot load the built kernel: {err}")
        return None
    problem = _self_test(module)
    if problem:
        _give_up(directory, problem)
        return None
    sys.modules[MODULE] = module
    return module


def _self_test(module) -> str | None:
    """Why the loaded kernel cannot be used (None: it matches MLX's dequantized matmul)."""
    import mlx.core as mx

    w = mx.random.normal((40, 64), key=mx.random.key(0))
    x = mx.random.normal((3, 64), key=mx.random.key(1))
    for bits in (4, 8):
        q, scales, biases = mx.quantize(w, group_size=32, bits=bits)
        dense = mx.dequantize(q, scales, biases, group_size=32, bits=bits)
        try:
            got = module.quantized_matmul_rows(x, q, scales, biases, dense, 32, bits)
        except TypeError as err:  # MLX's arrays not recognised: another nanobind ABI than MLX's
            return f"the kernel does not take MLX arrays (nanobind ABI differs from mlx's): {str(err).splitlines()[0]}"
        want = x @ dense.T
        if not mx.allclose(got, want, rtol=1e-4, atol=1e-4).item():
            return f"the kernel's {bits}-bit results differ from MLX's dequantized matmul"
    return None


def failure() -> str | None:
    """Why the kernel is not in use (None: it is, or was never asked for)."""
    directory = _build_dir()
    note = directory / "failed.txt" if directory else None
    return note.read_text().strip().splitlines()[0] if note and note.is_file() else None


def _toolchain() -> dict | None:
    try:
        import mlx.core as mx
        import nanobind
    except ImportError:
        return None
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return None
    mlx_root = Path(mx.__file__).parent
    return {"compiler": compiler, "mlx": mlx_root, "nanobind": Path(nanobind.__file__).parent,
            "versions": f"{mx.__version__}/{nanobind.__version__}"}


def _build_dir() -> Path | None:
    """models_dir()/native/<hash of the source, versions and machine>, or None without a toolchain."""
    from edge_repair.errors import StateError
    from edge_repair.paths import models_dir

    tools = _toolchain()
    if tools is None:
        return None
    try:
        root = models_dir()
    except StateError:  # no writable cache: the kernel is an optimisation, never a requirement
        return None
    digest = hashlib.sha256(SOURCE.read_bytes())
    # -march=native: the build is for this CPU model (a shared cache directory may see others).
    for part in (tools["versions"], tools["compiler"], platform.machine(), sysconfig.get_config_var("EXT_SUFFIX"),
                 _cpu_model()):
        digest.update(b"\0" + str(part).encode())
    directory = root / "native" / digest.hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(library: Path, tools: dict) -> None:
    from edge_repair.progress import status

    nb = tools["nanobind"]
    status("compiling the CPU decoding kernel for this machine (once, ~10 s)")
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        target = Path(scratch) / library.name
        command = [tools["compiler"], "-std=c++20", "-O3", "-march=native", "-fPIC", "-shared", "-fvisibility=hidden",
                   "-DNDEBUG", "-DNB_DOMAIN=mlx", f"-I{tools['mlx'] / 'include'}", f"-I{nb / 'include'}",
                   f"-I{nb / 'ext' / 'robin_map' / 'include'}", f"-I{sysconfig.get_paths()['include']}",
                   str(SOURCE), str(nb / "src" / "nb_combined.cpp"), f"-L{tools['mlx'] / 'lib'}", "-lmlx",
                   f"-Wl,-rpath,{tools['mlx'] / 'lib'}", "-o", str(target)]
        if sys.platform == "darwin":
            command += ["-undefined", "dynamic_lookup"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as err:
            _give_up(library.parent, f"the compiler did not run: {err}")
            return
        if done.returncode != 0:
            errors = [l for l in done.stderr.splitlines() if "error" in l] or done.stderr.splitlines() or ["(no output)"]
            _give_up(library.parent, f"compiling failed: {errors[0][:300]}", done.stderr[-4000:])
            return
        os.replace(target, library)  # atomic: a concurrent process sees a whole library or none


def _give_up(directory: Path, reason: str, detail: str = "") -> None:
    """Say once why, and leave the reason beside the build so the next load does not retry it."""
    from edge_repair.progress import status

    (directory / "failed.txt").write_text(f"{reason}\n{detail}")
    status(f"decoding uses the f32 weights: {reason} (details: {directory / 'failed.txt'})")
