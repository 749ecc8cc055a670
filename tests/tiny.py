"""Tiny random llama models built in-process, saved as real MLX model directories
(edge_repair/bench/synthetic.py, which `bench scaling` uses for its wider models)."""

from edge_repair.bench.synthetic import CHAT_TEMPLATE, SPECIALS, byte_vocab, make_model_dir, model_args

tiny_args = model_args  # the defaults are the tests' tiny shape
# A loaded tiny model's MLP width: its 128 neurons plus the spare ones in every (edited) layer (engine/spares.py).
HIDDEN_UNITS = 128 + 32

__all__ = ["CHAT_TEMPLATE", "SPECIALS", "HIDDEN_UNITS", "byte_vocab", "make_model_dir", "tiny_args"]
