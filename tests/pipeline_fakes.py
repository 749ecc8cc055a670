"""A fake forgetting engine for fast pipeline tests: a small random edit on one MLP, applied in memory."""

import mlx.core as mx

from edge_repair.engine.forget import ForgetResult, Verification
from edge_repair.engine.lowrank import LowRankEdit, current_factors, set_factors


class FakeEngine:
    """Records the requests it gets; `verified=False` simulates an edit that fails verification."""

    def __init__(self, verified: bool = True, layer: int = 1, rank: int = 2):
        self.verified, self.layer, self.rank = verified, layer, rank
        self.requests, self.retain = [], []

    def __call__(self, patient, request, retain_prompts):
        self.requests.append(request)
        self.retain.append(list(retain_prompts))
        down = patient.model.layers[self.layer].mlp.down_proj
        out_dim, in_dim = down.weight.shape
        path = f"model.layers.{self.layer}.mlp.down_proj"
        factors = {path: (mx.random.normal((in_dim, self.rank)) * 0.01, mx.random.normal((self.rank, out_dim)) * 0.01)}
        set_factors(patient.model, {**current_factors(patient.model), **factors})
        probes = 1 + len(request.paraphrases)
        verification = Verification(probes if self.verified else 0, probes, 4, 4, probes)
        edit = LowRankEdit(factors, {"method": request.method, "layers": [self.layer]})
        return ForgetResult(edit, verification, 0.01)
