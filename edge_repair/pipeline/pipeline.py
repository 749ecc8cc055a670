"""RePAIR end to end: watchdog -> (consent) -> surgeon -> engine (edit + verify) -> persist.

The engine and the store are parameters, so tests run the whole path on tiny models with fakes.
An edit that fails verification is rolled back in memory and never persisted.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_repair.errors import EditError
from edge_repair.pipeline.extract import ForgetPair
from edge_repair.pipeline.plan import RepairPlan, describe, to_request
from edge_repair.pipeline.surgeon import Surgeon, SurgeonReport
from edge_repair.pipeline.watchdog import Detection, Watchdog


@dataclass
class Outcome:
    detected: bool
    pair: ForgetPair | None = None
    plan: RepairPlan | None = None
    surgeon: SurgeonReport | None = None
    edit_id: str | None = None
    verified: bool = False
    confirmed: bool = True
    verification: object = None
    edit_info: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)   # seconds per stage
    note: str = ""

    @property
    def seconds(self) -> float:
        return round(sum(self.stages.values()), 3)

    def summary(self) -> dict:
        """What --json and the benchmark report: never the forgotten text itself."""
        return {"detected": self.detected, "confirmed": self.confirmed, "edit_id": self.edit_id,
                "verified": self.verified, "source": self.pair.source if self.pair else None,
                "plan": describe(self.plan) if self.plan else None,
                "plan_valid": self.surgeon.valid if self.surgeon else None,
                "layer": self.edit_info.get("layers"), "rank": self.edit_info.get("rank"),
                "seconds": self.seconds, "stages": {k: round(v, 3) for k, v in self.stages.items()},
                "tries": self.edit_info.get("tries"), "history": self.edit_info.get("history"),
                "verification": self.verification.as_dict() if self.verification else None,  # counts only
                "note": self.note}


@dataclass
class Pipeline:
    patient: object
    watchdog: Watchdog
    surgeon: Surgeon
    engine: Callable                      # forget(patient, ForgetRequest, retain_prompts) -> ForgetResult
    record: Callable | None = None        # record_edit(patient, edit, probes, scrub) -> id; None: not persisted
    retain: Callable = None               # retain_prompts() -> list[str]

    def detect(self, message: str, history: list[dict]) -> tuple[Detection, float]:
        start = time.perf_counter()
        detection = self.watchdog.inspect(message, history)
        return detection, time.perf_counter() - start

    def run(self, message: str, history: list[dict], confirm: Callable[[ForgetPair], bool]) -> Outcome:
        detection, seconds = self.detect(message, history)
        if not detection.unlearn:
            return Outcome(False, stages={"watchdog": seconds}, note="not a forget request; nothing was changed")
        if detection.pair is None:
            return Outcome(True, stages={"watchdog": seconds}, note="nothing to forget: there is no earlier answer")
        return self.repair(detection.pair, confirm, {"watchdog": seconds})

    def repair(self, pair: ForgetPair, confirm: Callable[[ForgetPair], bool], stages: dict | None = None) -> Outcome:
        stages = dict(stages or {})
        if not confirm(pair):
            return Outcome(True, pair, confirmed=False, stages=stages, note="cancelled; nothing was changed")
        start = time.perf_counter()
        plan, report = self.surgeon.plan(pair, len(self.patient.model.layers))
        stages["surgeon"] = time.perf_counter() - start
        outcome = Outcome(True, pair, plan, report, stages=stages)
        self._edit(outcome, plan, pair)
        return outcome

    def _edit(self, outcome: Outcome, plan: RepairPlan, pair: ForgetPair) -> None:
        from edge_repair.engine.lowrank import current_factors, set_factors

        before = current_factors(self.patient.model)
        start = time.perf_counter()
        retain = self.retain() if self.retain else []
        try:
            result = self.engine(self.patient, to_request(plan, pair), retain)
        except NotImplementedError:
            raise EditError("the forgetting engine is not available in this build; nothing was changed") from None
        outcome.stages["engine"] = time.perf_counter() - start
        outcome.verification, outcome.verified = result.verification, result.verification.verified
        outcome.edit_info = {"layers": result.edit.info.get("layers"), "rank": result.edit.rank,
                             "tries": result.tries, "history": result.edit.info.get("history")}
        if not outcome.verified:
            set_factors(self.patient.model, before)  # roll back: an unverified edit is not kept
            outcome.note = f"the edit could not be verified ({result.verification.reason}); nothing was changed"
            return
        result.edit.info.setdefault("verified", True)
        if self.record:
            start = time.perf_counter()
            probes = [pair.prompt] + list(plan.paraphrases)
            outcome.edit_id = self.record(self.patient, result.edit, probes, [pair.prompt, pair.response, pair.subject])
            outcome.stages["persist"] = time.perf_counter() - start


def default_pipeline(patient, watchdog_model=None, surgeon_model=None, watchdog_config=None,
                     surgeon_config=None, engine=None, persist: bool = True) -> Pipeline:
    """The pipeline as the CLI and chat use it: every role defaults to the patient's own model."""
    from edge_repair.pipeline.edits_api import record_edit
    from edge_repair.pipeline.retain import retain_prompts

    return Pipeline(patient, Watchdog(watchdog_model or patient, watchdog_config),
                    Surgeon(surgeon_model or patient, surgeon_config), engine or PreparedEngine(),
                    record_edit if persist else None, retain_prompts)


@dataclass
class PreparedEngine:
    """The forgetting engine with the once-per-model retain activations kept between edits:
    unsealing them from disk costs ~2-3 s per edit; holding them costs ~150 MB of RAM."""

    bank: object = None
    retain: list[str] | None = None   # what the bank was built from: a changed retain sample rebuilds it

    def __call__(self, patient, request, retain: list[str]):
        from edge_repair.engine.forget import forget, prepare

        if self.bank is None or retain != self.retain:
            self.bank, self.retain = prepare(patient, retain), list(retain)
        return forget(patient, request, retain, bank=self.bank)
