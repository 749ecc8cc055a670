import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from edge_repair.errors import ModelError
from edge_repair.gguf import convert_gguf
from edge_repair.loading import load_patient
from tests.tiny import CHAT_TEMPLATE, SPECIALS, byte_vocab, tiny_args

GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_tiny_gguf(path, arch="llama"):
    from mlx_lm.models import llama

    vocab = byte_vocab()
    vocab["Ġt"] = len(vocab)
    args = tiny_args(vocab=len(vocab))
    model = llama.Model(args)
    mx.eval(model.parameters())
    tensors = {}
    for name, value in tree_flatten(model.parameters()):
        if name.startswith("model.layers."):
            _, _, index, rest = name.split(".", 3)
            module, leaf = rest.rsplit(".", 1)
            tensors[f"blk.{index}.{GGUF_NAMES[module]}.{leaf}"] = value
        elif name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = value
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = value
    tokens = sorted(vocab, key=vocab.get)
    types = [3 if t in SPECIALS else 1 for t in tokens]
    u32 = lambda v: mx.array(v, dtype=mx.uint32)
    meta = {
        "general.architecture": arch,
        f"{arch}.embedding_length": u32(args.hidden_size), f"{arch}.block_count": u32(args.num_hidden_layers),
        f"{arch}.feed_forward_length": u32(args.intermediate_size),
        f"{arch}.attention.head_count": u32(args.num_attention_heads),
        f"{arch}.attention.head_count_kv": u32(args.num_key_value_heads),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(1e-5, dtype=mx.float32),
        f"{arch}.context_length": u32(256),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["Ġ t"],
        "tokenizer.ggml.token_type": mx.array(np.array(types, dtype=np.int32)),
        "tokenizer.ggml.bos_token_id": u32(1), "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    mx.save_gguf(str(path), tensors, meta)
    return model


def test_converted_gguf_matches_source_logits(tmp_path):
    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")
    patient = load_patient(str(out), compute="native")
    tokens = mx.array([[5, 40, 77, 12]])
    # GGUF q/k rows are for interleaved RoPE; the source used half-split, so compare via a
    # model built with the same convention.
    source.args.rope_traditional = True
    from mlx_lm.models import llama
    reference = llama.Model(llama.ModelArgs(**{**vars(source.args), "rope_traditional": True}))
    reference.update(source.parameters())
    assert mx.allclose(patient.model(tokens), reference(tokens), atol=1e-4)
    ids = patient.tokenizer.encode("<|im_start|>user\nhi there<|im_end|>")
    assert ids[0] == 1 and patient.tokenizer.decode(ids[1:]) == "user\nhi there<|im_end|>"


def test_non_llama_gguf_is_refused(tmp_path):
    write_tiny_gguf(tmp_path / "other.gguf", arch="bert")
    with pytest.raises(ModelError, match="not supported"):
        convert_gguf(tmp_path / "other.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
