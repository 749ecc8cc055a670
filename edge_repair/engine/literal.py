"""The paper's recipe taken literally, for comparison: STAMP / STAMP-LR on down_proj at one layer.

Forget rows (every forget-prompt token after the shared chat-template prefix) get the
steering vector r_SV (Eq. 4) added to their MLP output; retain and reference rows keep theirs;
down_proj's update solves that by the ridge pseudoinverse (Eq. 8–9) or its low-rank form
(Eq. 10–11). Measured on SmolLM2: too weak to forget at small strength, destructive at large.
"""

import mlx.core as mx
import numpy as np

from edge_repair import datasets
from edge_repair.engine import solve
from edge_repair.engine.capture import capture
from edge_repair.engine.gated import silu
from edge_repair.engine.lowrank import mlp_weights
from edge_repair.engine.verify import chat_tokens


def _shared_prefix(token_lists: list[list[int]]) -> int:
    first = token_lists[0]
    for i in range(min(len(t) for t in token_lists)):
        if any(t[i] != first[i] for t in token_lists):
            return i
    return 0


def stamp_edit(patient, prompts: list[str], retain_prompts: list[str], layer: int,
               rank: int | None = None, lam: float = 1e-2, references: int = 32):
    """Returns strength -> factors; the captures and the pseudoinverse are computed once."""
    tok = patient.tokenizer
    refs = datasets.refusals()[:references]
    lists = [chat_tokens(tok, p) for p in prompts] + [chat_tokens(tok, p) for p in retain_prompts + refs]
    skip = _shared_prefix(lists)
    acts = capture(patient.model, lists, [layer])
    gate_w, up_w, down_w = mlp_weights(patient.model, layer)
    X = np.array(acts.mlp_in[layer])
    H = silu(X @ gate_w.T) * (X @ up_w.T)              # down_proj's inputs
    O = np.array(acts.mlp_out[layer])
    n = len(prompts)
    forget_rows = [r for i in range(n) for r in acts.rows(i)[skip:]]
    ref_rows = [r for i in range(len(lists) - len(refs), len(lists)) for r in acts.rows(i)[skip:]]
    keep_rows = [r for i in range(n, len(lists)) for r in acts.rows(i)]
    r_sv = solve.steering_vector(O[ref_rows], O[forget_rows])
    rows = forget_rows + keep_rows
    shift = np.zeros((len(rows), O.shape[1]), np.float32)
    shift[: len(forget_rows)] = r_sv
    # The update is linear in the target shift, so solve once for unit strength and scale.
    if rank is None:
        a = solve.stamp_update(H[rows], shift, np.zeros_like(shift), lam)   # dense (d_ff, d)
        b = np.eye(a.shape[1], dtype=np.float32)
    else:
        a, b = solve.stamp_lr_update(H[rows], shift, np.zeros_like(shift), rank, lam)
    path = f"model.layers.{layer}.mlp.down_proj"
    return lambda strength: {path: (mx.array(a.astype(np.float32)), mx.array((strength * b).astype(np.float32)))}
