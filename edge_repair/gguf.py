"""Convert a llama-family GGUF file into an MLX model directory that `mlx_lm.load` reads.

`mx.load` reads GGUF natively: Q4_0/Q4_1/Q8_0 tensors arrive as MLX affine-quantized
triples (weight, scales, biases), group 32. GGUF stores q/k rows permuted for interleaved
RoPE, hence `rope_traditional=True`. The tokenizer is rebuilt from the GGUF metadata.
"""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np

from edge_repair.errors import ModelError

# GGUF tensor names -> mlx-lm llama parameter names.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_CONTROL_TOKEN = 3  # llama.cpp token type for special/control tokens
GGUF_BLOCK = 32


def read_gguf(path: Path) -> tuple[dict, dict]:
    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as err:  # mlx raises RuntimeError/ValueError with C++ messages
        raise ModelError(f"{path} is not a readable GGUF file ({err})") from None


def _scalar(meta: dict, key: str, default=None):
    if key not in meta:
        if default is None:
            raise ModelError(f"GGUF metadata lacks {key}; cannot convert")
        return default
    value = meta[key]
    return value.item() if isinstance(value, mx.array) else value


def _config(meta: dict, weights: dict) -> dict:
    arch = _scalar(meta, "general.architecture")
    if arch != "llama":
        raise ModelError(f"GGUF architecture '{arch}' is not supported (llama-family GGUF only); use an MLX model directory or repo id")
    key = lambda name: f"{arch}.{name}"
    config = {
        "model_type": "llama",
        "hidden_size": int(_scalar(meta, key("embedding_length"))),
        "num_hidden_layers": int(_scalar(meta, key("block_count"))),
        "intermediate_size": int(_scalar(meta, key("feed_forward_length"))),
        "num_attention_heads": int(_scalar(meta, key("attention.head_count"))),
        "num_key_value_heads": int(_scalar(meta, key("attention.head_count_kv"))),
        "rms_norm_eps": float(_scalar(meta, key("attention.layer_norm_rms_epsilon"))),
        "rope_theta": float(_scalar(meta, key("rope.freq_base"), 10000.0)),
        "max_position_embeddings": int(_scalar(meta, key("context_length"), 2048)),
        "vocab_size": int(weights["token_embd.weight"].shape[0]),
        "rope_traditional": True,
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id", 2)),
    }
    quantization = _quantization(weights)
    if quantization:
        config["quantization"] = quantization
    return config


def _bits(weights: dict, stem: str) -> dict:
    # GGUF's legacy quants (Q4_0, Q4_1, Q8_0) all use blocks of 32 along the input dimension.
    in_dims = weights[f"{stem}.scales"].shape[1] * GGUF_BLOCK
    return {"group_size": GGUF_BLOCK, "bits": weights[f"{stem}.weight"].shape[1] * 32 // in_dims}


def _quantization(weights: dict) -> dict | None:
    """MLX quantization config: the most common setting, plus per-module overrides (GGUF mixes them)."""
    stems = [k[: -len(".scales")] for k in weights if k.endswith(".scales")]
    if not stems:
        return None
    per_stem = {stem: _bits(weights, stem) for stem in stems}
    settings = [tuple(sorted(v.items())) for v in per_stem.values()]
    common = dict(max(set(settings), key=settings.count))
    overrides = {_rename(f"{stem}.weight").rsplit(".", 1)[0]: q for stem, q in per_stem.items() if q != common}
    return {**common, **overrides}


def _rename(name: str) -> str:
    stem, leaf = name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, index, part = stem.split(".", 2)
        if part not in _BLOCK_NAMES:
            raise ModelError(f"GGUF tensor {name} has no llama counterpart; cannot convert")
        return f"model.layers.{index}.{_BLOCK_NAMES[part]}.{leaf}"
    if stem not in _TOP_NAMES:
        raise ModelError(f"GGUF tensor {name} has no llama counterpart; cannot convert")
    return f"{_TOP_NAMES[stem]}.{leaf}"


def _tokenizer_files(meta: dict, out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if _scalar(meta, "tokenizer.ggml.model") != "gpt2":
        raise ModelError("only byte-level BPE (gpt2-style) GGUF tokenizers can be rebuilt")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = np.array(meta["tokenizer.ggml.token_type"]) if "tokenizer.ggml.token_type" in meta else None
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # SmolLM/StarCoder pre-tokenisation: single digits, then GPT-2 byte-level splitting.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    special = [tokens[i] for i in np.flatnonzero(types == _CONTROL_TOKEN)] if types is not None else []
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))

    name = lambda key, default: tokens[int(_scalar(meta, key, default))]
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name("tokenizer.ggml.bos_token_id", 1),
        "eos_token": name("tokenizer.ggml.eos_token_id", 2),
        "unk_token": name("tokenizer.ggml.unknown_token_id", 0),
        "pad_token": name("tokenizer.ggml.padding_token_id", 2),
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(_scalar(meta, "llama.context_length", 2048)),
        "clean_up_tokenization_spaces": False,
    }
    if "tokenizer.chat_template" in meta:
        tokenizer_config["chat_template"] = meta["tokenizer.chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write `out_dir` (config.json, model.safetensors, tokenizer files); atomic via a temp dir."""
    weights, meta = read_gguf(gguf_path)
    config = _config(meta, weights)
    renamed = {_rename(k): v for k, v in weights.items()}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), renamed, metadata={"format": "mlx"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    _tokenizer_files(meta, tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
