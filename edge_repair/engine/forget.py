"""Entry point of the forgetting engine: one forget pair in, a verified low-rank edit out.

(Work in progress: the solve lands with issue 3; the request/result types are the contract
the pipeline, the edit store and the benchmarks build on.)
"""

from dataclasses import dataclass, field

from edge_repair.engine.lowrank import LowRankEdit


@dataclass
class ForgetRequest:
    prompt: str                      # p_f, e.g. "What is the capital of France?"
    response: str | None = None      # r_f; None means the patient's own greedy answer
    paraphrases: list[str] = field(default_factory=list)  # other phrasings (surgeon/watchdog)
    subject: str | None = None       # e.g. "France", "Maya Taylor" (used for probes, never stored)
    method: str = "stamp-lr"         # "stamp" | "stamp-lr"
    layers: str | list[int] = "auto"
    rank: int | None = None
    strength: float = 1.0


@dataclass
class Verification:
    forgotten: int          # probes (prompt + paraphrases) whose answer no longer gives r_f
    forget_probes: int
    retained: int           # retain probes whose greedy answer is unchanged
    retain_probes: int
    refused: int            # probes answered with a short refusal

    @property
    def verified(self) -> bool:
        return self.forgotten == self.forget_probes and self.retained >= 0.9 * self.retain_probes


@dataclass
class ForgetResult:
    edit: LowRankEdit
    verification: Verification
    seconds: float
    tries: int = 1


def forget(patient, request: ForgetRequest, retain_prompts: list[str]) -> ForgetResult:
    """Compute, apply (in memory) and verify an edit; the caller persists it."""
    raise NotImplementedError("the STAMP solve lands with issue 3")
