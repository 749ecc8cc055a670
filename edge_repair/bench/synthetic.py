"""Random llama models of a chosen shape, saved as real MLX model directories (byte-level
tokenizer, ChatML template): the tests' tiny models and `bench scaling`'s models of growing width."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import llama

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def model_args(hidden=64, layers=4, intermediate=128, vocab=300, context=256, heads=4) -> llama.ModelArgs:
    return llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=intermediate, num_attention_heads=heads,
                           num_key_value_heads=max(1, heads // 2), rms_norm_eps=1e-5, vocab_size=vocab,
                           max_position_embeddings=context, tie_word_embeddings=True)


def byte_vocab() -> dict:
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    return vocab


def write_tokenizer(out: Path) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = byte_vocab()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "bos_token": "<|im_start|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE,
        "model_max_length": 256,
    }))
    return len(vocab)


def make_model_dir(out: Path, quantized: bool = False, seed: int = 0, **shape) -> Path:
    """A random model of `shape` (model_args' keywords) in `out`; `quantized`: 4-bit, groups of 32."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out)
    mx.random.seed(seed)
    args = model_args(vocab=vocab, **shape)
    model = llama.Model(args)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    config["eos_token_id"] = 2
    if quantized:
        nn.quantize(model, group_size=32, bits=4)
        config["quantization"] = {"group_size": 32, "bits": 4}
    mx.eval(model.parameters())
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    return out
