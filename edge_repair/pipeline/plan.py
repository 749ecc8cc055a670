"""The repair plan: data, never code. Every field is checked against an allow-list and bounds.

The paper's surgeon writes Python that is executed; here a plan is a small record the engine reads,
and any plan that fails validation is replaced by a safe default (and reported as invalid).
"""

import json
from dataclasses import asdict, dataclass, field

from edge_repair.engine.forget import METHODS, ForgetRequest
from edge_repair.pipeline.extract import ForgetPair, keeps_subject

TASKS = ("personal", "misinformation", "harmful", "general")
RANK_BOUNDS = (1, 64)
STRENGTH_BOUNDS = (0.25, 2.0)
MAX_LAYERS = 16
MAX_PARAPHRASES = 8
MAX_TEXT = 200


@dataclass
class RepairPlan:
    method: str = METHODS[0]
    layers: str | list[int] = "auto"
    rank: int | None = None
    strength: float = 1.0
    task: str = "general"
    subject: str = ""
    paraphrases: list[str] = field(default_factory=list)


def default_plan(subject: str = "") -> RepairPlan:
    """The safe plan used whenever a proposed one is invalid: the engine's own defaults."""
    return RepairPlan(subject=subject)


def plan_problems(plan: RepairPlan, num_layers: int) -> list[str]:
    """Everything wrong with a plan (empty when it is valid)."""
    problems = []
    if plan.method not in METHODS:
        problems.append(f"method {plan.method!r} is not one of {METHODS}")
    if plan.task not in TASKS:
        problems.append(f"task {plan.task!r} is not one of {TASKS}")
    if plan.layers != "auto":
        ok = (isinstance(plan.layers, list) and 0 < len(plan.layers) <= MAX_LAYERS
              and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_layers for i in plan.layers))
        if not ok:
            problems.append(f"layers must be 'auto' or 1-{MAX_LAYERS} indices in [0, {num_layers})")
    if plan.rank is not None and not (isinstance(plan.rank, int) and RANK_BOUNDS[0] <= plan.rank <= RANK_BOUNDS[1]):
        problems.append(f"rank must be empty or an integer in {RANK_BOUNDS}")
    if not (isinstance(plan.strength, (int, float)) and STRENGTH_BOUNDS[0] <= plan.strength <= STRENGTH_BOUNDS[1]):
        problems.append(f"strength must be in {STRENGTH_BOUNDS}")
    if not isinstance(plan.subject, str) or not plan.subject.strip() or len(plan.subject) > MAX_TEXT:
        problems.append("subject must be a short non-empty text")
    problems += _paraphrase_problems(plan)
    return problems


def _paraphrase_problems(plan: RepairPlan) -> list[str]:
    if not isinstance(plan.paraphrases, list) or len(plan.paraphrases) > MAX_PARAPHRASES:
        return [f"paraphrases must be a list of at most {MAX_PARAPHRASES}"]
    for text in plan.paraphrases:
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return ["each paraphrase must be a short non-empty text"]
        if isinstance(plan.subject, str) and not keeps_subject(text, plan.subject):
            return ["every paraphrase must keep the subject"]
    return []


def plan_from_json(text: str, num_layers: int) -> tuple[RepairPlan, list[str]]:
    """Parse a plan proposed as JSON (e.g. by a larger surgeon model); unknown keys are refused."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return default_plan(), ["not valid JSON"]
    if not isinstance(raw, dict):
        return default_plan(), ["a plan must be a JSON object"]
    unknown = sorted(set(raw) - set(RepairPlan.__dataclass_fields__))
    if unknown:
        return default_plan(str(raw.get("subject", ""))[:MAX_TEXT]), [f"unknown fields: {unknown}"]
    plan = RepairPlan(**raw)
    problems = plan_problems(plan, num_layers)
    return (default_plan(plan.subject if isinstance(plan.subject, str) else "") if problems else plan), problems


def to_request(plan: RepairPlan, pair: ForgetPair) -> ForgetRequest:
    return ForgetRequest(prompt=pair.prompt, response=pair.response, paraphrases=list(plan.paraphrases),
                         subject=plan.subject or pair.subject, method=plan.method, layers=plan.layers,
                         rank=plan.rank, strength=float(plan.strength),
                         scope="subject" if pair.whole_subject else "fact")


def describe(plan: RepairPlan) -> dict:
    """The plan without any text that names what is forgotten (safe for logs and --json)."""
    info = asdict(plan)
    info.pop("subject")
    info["paraphrases"] = len(plan.paraphrases)
    return info
