"""Random low-rank edits on tiny models, shared by the edit tests and the crash test's child."""

import mlx.core as mx

from edge_repair.edits.adapters import module_shapes
from edge_repair.engine.lowrank import LowRankEdit

PREFIX = "model.layers."


def random_edit(model, layers=(1,), rank=2, seed=0, keys=("mlp.gate_proj", "mlp.down_proj"), scale=0.5, info=None):
    shapes = module_shapes(model)
    mx.random.seed(seed)
    factors = {}
    for layer in layers:
        for key in keys:
            in_dims, out_dims = shapes[f"{PREFIX}{layer}.{key}"]
            factors[f"{PREFIX}{layer}.{key}"] = (mx.random.normal((in_dims, rank)) * scale,
                                                  mx.random.normal((rank, out_dims)) * scale)
    return LowRankEdit(factors, info if info is not None else {"method": "stamp-lr", "verified": True, "rank": rank})
