"""The surgeon: turns the forget pair into a repair plan (data, validated; never executed code).

The model makes the one open choice, the kind of knowledge, by label log-probabilities; the kind
selects an allow-listed preset. Paraphrases come from templates plus the model, all validated.
"""

import time
from dataclasses import dataclass, field

from edge_repair.pipeline.extract import ForgetPair
from edge_repair.pipeline.paraphrase import model_paraphrases, template_paraphrases, valid_paraphrases
from edge_repair.pipeline.plan import MAX_PARAPHRASES, RepairPlan, default_plan, plan_problems
from edge_repair.pipeline.scoring import choose

# Every task uses the gated method (the literal STAMP/STAMP-LR only forget by breaking other
# answers on SmolLM2, see scripts/bench_forget.py); harmful knowledge gets a stronger push.
PRESETS = {
    "personal": {"method": "stamp-gated", "strength": 1.0},
    "misinformation": {"method": "stamp-gated", "strength": 1.0},
    "harmful": {"method": "stamp-gated", "strength": 1.25},
    "general": {"method": "stamp-gated", "strength": 1.0},
}
KIND_QUESTION = ('Question: "{prompt}"\nWhat does this question ask about: a specific person, '
                 'something dangerous or harmful, or a general fact?')
KIND_LABELS = {"personal": "A specific person.", "harmful": "Something dangerous or harmful.",
               "general": "A general fact."}


@dataclass
class SurgeonConfig:
    # Greedy rewrites by the model (~1.2 s each here). Off by default: asked to rewrite 24 fact
    # questions, the 135M default answered all 24 instead ("The capital of Germany is Berlin."),
    # and such a statement passed validation (it keeps the subject) and became a phrasing to refuse.
    model_paraphrases: int = 0
    max_paraphrases: int = MAX_PARAPHRASES


@dataclass
class SurgeonReport:
    valid: bool                    # the proposed plan passed validation (no fallback)
    problems: list[str] = field(default_factory=list)
    proposed_paraphrases: int = 0
    kept_paraphrases: int = 0
    model_paraphrases_kept: int = 0
    seconds: float = 0.0


class Surgeon:
    def __init__(self, model=None, config: SurgeonConfig | None = None):
        self.model = model
        self.config = config or SurgeonConfig()

    def plan(self, pair: ForgetPair, num_layers: int) -> tuple[RepairPlan, SurgeonReport]:
        start = time.perf_counter()
        task = self.task_of(pair)
        generated = []
        if self.model is not None and self.config.model_paraphrases:
            generated = model_paraphrases(self.model, pair.prompt, self.config.model_paraphrases)
        candidates = generated + template_paraphrases(pair.prompt, pair.subject, pair.whole_subject)
        kept = valid_paraphrases(candidates, pair.prompt, pair.subject, self.config.max_paraphrases)
        plan = RepairPlan(task=task, subject=pair.subject, paraphrases=kept, **PRESETS[task])
        problems = plan_problems(plan, num_layers)
        if problems:
            plan = default_plan(pair.subject)
        from_model = len(valid_paraphrases(generated, pair.prompt, pair.subject))
        report = SurgeonReport(not problems, problems, len(candidates), len(kept), from_model, time.perf_counter() - start)
        return plan, report

    def task_of(self, pair: ForgetPair) -> str:
        if pair.correction:  # the user said the answer is wrong: misinformation, no model needed
            return "misinformation"
        if self.model is None:
            return "general"
        prompt = [{"role": "user", "content": KIND_QUESTION.format(prompt=pair.prompt[:300])}]
        kind, _ = choose(self.model, prompt, KIND_LABELS)
        return kind
