"""Native CPU kernels, compiled on first use for this machine and kept in the models cache:
quantized_matmul.cpp (decoding from the quantized weights) and fused.cpp (RoPE, RMSNorm, SwiGLU).

MLX compiles its own fused CPU loops the same way (with the system's C++ compiler, at run
time). An MLX extension must share MLX's nanobind ABI and domain ("mlx"): it is built against
the installed `mlx` headers and library with the `nanobind` package's sources. A build that
fails (no compiler, an ABI mismatch) leaves a note beside it, so the next load does not retry
the same build; the model then runs on MLX's own ops. Each fused op is used only while it gives
MLX's results bit for bit (checked on every load: another MLX build may round differently, e.g.
if the compiler fuses multiply-adds in MLX's JIT-compiled SwiGLU loop, as GCC may on aarch64).
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

HERE = Path(__file__).parent
SOURCES = [HERE / name for name in ("module.cpp", "quantized_matmul.cpp", "fused.cpp", "workers.cpp")]
HEADERS = [HERE / name for name in ("quantized_matmul.h", "fused.h", "workers.h")]
MODULE = "_kernels"
BUILD_SECONDS = 600


def kernels():
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
    problem = _check_quantized(module)
    if problem:
        _give_up(directory, problem)
        return None
    module.fused_problems = _check_fused(module)  # ~4 ms; a mismatch leaves the other kernels in use
    if module.fused_problems:
        from edge_repair.progress import status

        status(f"MLX's own ops are used where the native ones differ: {'; '.join(module.fused_problems.values())}")
    sys.modules[MODULE] = module
    return module


FUSED = ("rope_rotate", "rms_norm", "swiglu")


def fused_op(name: str):
    """The kernel module if its fused op `name` (one of FUSED) gives MLX's results bit for bit, else
    None (also with EDGE_REPAIR_KERNEL=matmul: only the quantized matmul, for comparisons)."""
    module = kernels()
    if module is None or os.environ.get("EDGE_REPAIR_KERNEL", "").lower() == "matmul":
        return None
    return None if name in module.fused_problems else module


def _check_fused(module) -> dict[str, str]:
    """op name -> why it cannot stand in for MLX's, for each fused op that is not bit-identical to
    MLX's on random rows (empty: all are)."""
    import mlx.core as mx

    from edge_repair import cpu_swiglu
    from edge_repair.cpu_fused import rope_table

    keys = mx.random.split(mx.random.key(7), 4)
    x = mx.random.normal((2, 3, 5, 64), key=keys[0]) * 4.0
    weight = mx.random.normal((64,), key=keys[1])
    gate, up = mx.random.normal((7, 96), key=keys[2]) * 8.0, mx.random.normal((7, 96), key=keys[3])
    offsets = mx.array([3, 40])
    problems = {}
    for traditional in (True, False):
        for dims, offset in ((64, 11), (32, offsets)):
            table = rope_table(x.shape[0] if isinstance(offset, mx.array) else 1, x.shape[2], dims, 10000.0, 1.0,
                               offset)
            want = mx.fast.rope(x, dims, traditional=traditional, base=10000.0, scale=1.0, offset=offset)
            if not mx.array_equal(module.rope_rotate(x, table, dims, traditional), want).item():
                problems["rope_rotate"] = "RoPE differs from mx.fast.rope"
    if not mx.array_equal(module.rms_norm(x, weight, 1e-5), mx.fast.rms_norm(x, weight, 1e-5)).item():
        problems["rms_norm"] = "RMSNorm differs from mx.fast.rms_norm"
    if not mx.array_equal(module.swiglu(gate, up), cpu_swiglu.compiled_swiglu(gate, up)).item():
        problems["swiglu"] = "SwiGLU differs from cpu_swiglu's"
    return problems


def _check_quantized(module) -> str | None:
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
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in SOURCES + HEADERS))
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
    status("compiling the CPU kernels for this machine (once, ~10 s)")
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        target = Path(scratch) / library.name
        # -ffp-contract=off: no product fused into an add, so the fused ops round as MLX does.
        command = [tools["compiler"], "-std=c++20", "-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared",
                   "-fvisibility=hidden", "-DNDEBUG", "-DNB_DOMAIN=mlx", f"-I{tools['mlx'] / 'include'}",
                   f"-I{nb / 'include'}", f"-I{nb / 'ext' / 'robin_map' / 'include'}",
                   f"-I{sysconfig.get_paths()['include']}", *map(str, SOURCES), str(nb / "src" / "nb_combined.cpp"),
                   f"-L{tools['mlx'] / 'lib'}", "-lmlx", f"-Wl,-rpath,{tools['mlx'] / 'lib'}", "-o", str(target)]
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
    status(f"no native CPU kernels (MLX's ops are used): {reason} (details: {directory / 'failed.txt'})")
