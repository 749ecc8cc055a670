"""The watchdog: reads the last k turns and decides whether the latest user message asks to forget.

Modes (for honest measurement): "probe" (the default): a linear probe on the model's hidden states
decides (request_probe.py) and the rules read what to forget; "rules" (deterministic reading
only); "model" (label log-probabilities of a yes/no question only); "combined": the rules decide
what they can read, the model is asked only about forgetting words outside any imperative the
rules parsed and outside known traps. In every mode only the user's own words count (screen.py).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_repair.pipeline.extract import ForgetPair, exchanges, extract_pair
from edge_repair.pipeline.intent import (MEMORY_NOUNS, TRAILING, Intent, has_imperative, mentions_forgetting,
                                        read_instruction)
from edge_repair.pipeline.request_probe import RequestProbe, load_or_fit, message_features
from edge_repair.pipeline.scoring import label_logprobs
from edge_repair.pipeline.screen import own_text

MODES = ("probe", "combined", "rules", "model")
QUESTION = ('Message: "{message}"\nIs this message a request for you to forget or delete some information '
            'from your memory? Answer yes or no.')
_TRAPS = re.compile(
    r"\b(?:don't|do\s+not|never|won't|will\s+not|not|didn't|can't|cannot)\s+(?:\w+\s+){0,2}(?:forget|delete|remove|erase)"
    r"|\blet(?:'s|\s+us)\s+forget"
    r"|\b(?:forgot|forgotten|forgetting|forgets|forgetful)\b"
    r"|\b(?:i|we|they|he|she|you)\s+(?:always\s+|often\s+|sometimes\s+|usually\s+)?forget\b"
    r"|\bhow\s+(?:do|can|to|would|should|does)\b|\?\s*$", re.I)

# What a probe-detected request names when the rules read no target (fallback_intent).
_PRONOUN = r"(?:him|her|them|it|this|that|those|these|he|she|they)"
_MEMORY_WORDS = rf"(?:your\s+)?(?:{MEMORY_NOUNS}|memories|system)\b"
_ABOUT = re.compile(r"\b(?:about|regarding|concerning)\s+(?P<t>[^.?!,;]+)", re.I)  # before of/on: "hold on to … about X"
_NAMED = re.compile(r"\b(?:on|of|know(?:s|ing)?)\s+(?P<t>[^.?!,;]+)", re.I)
_MEMORY_TAIL = rf"\s+(?:in|from|out\s+of|inside)\s+{_MEMORY_WORDS}.*$|{TRAILING}"


@dataclass
class WatchdogConfig:
    mode: str = "probe"
    history_turns: int = 6        # k: the last k exchanges are read
    margin: float = 1.0          # model: calibrated yes-minus-no log-prob needed to say "unlearn"
    # probe: score (±1 targets) needed to say "unlearn". Cross-validated on the shipped examples
    # (SmolLM2, layer 18): 0.1 finds 97.9 % of requests with 0.6 % false positives, 0 finds 98.7 % with 0.9 %.
    probe_margin: float = 0.1


@dataclass
class Detection:
    unlearn: bool
    pair: ForgetPair | None = None
    decided_by: str = "rules"     # "rules" | "model"
    scores: dict = field(default_factory=dict)


class Watchdog:
    """Classifies the latest user message as chat or unlearn and extracts the forget pair."""

    def __init__(self, model=None, config: WatchdogConfig | None = None, home: Path | None = None):
        self.model, self.home = model, home
        self.config = config or WatchdogConfig()
        if self.config.mode not in MODES:
            raise ValueError(f"watchdog mode must be one of {MODES}")
        if self.config.mode != "rules" and model is None:
            raise ValueError("the probe, model and combined watchdogs need a model")
        self._bias: float | None = None  # content-free calibration, computed on first use
        self._probe: RequestProbe | None = None  # fitted or read from the cache on first use

    def inspect(self, message: str, history: list[dict]) -> Detection:
        recent = history[-2 * self.config.history_turns:] if self.config.history_turns else []
        mode = self.config.mode
        if mode == "model":
            return self._by_model(message, recent)
        if mode == "probe":
            return self._by_probe(message, recent)
        intent = read_instruction(message)
        if intent is not None:
            return Detection(True, extract_pair(intent, recent), "rules")
        if mode == "rules" or not self._worth_asking(message):
            return Detection(False, None, "rules")
        return self._by_model(message, recent)

    def _worth_asking(self, message: str) -> bool:
        """Forgetting words the rules could not place: an imperative they parsed and declined is final."""
        text = own_text(message)
        return bool(text) and mentions_forgetting(text) and not has_imperative(text) and not _TRAPS.search(text)

    def _by_probe(self, message: str, history: list[dict]) -> Detection:
        text = own_text(message)
        if not text:  # pasted or quoted material never triggers
            return Detection(False, None, "probe")
        score = self.probe_score(text)
        if score < self.config.probe_margin:
            return Detection(False, None, "probe", {"probe": score})
        return Detection(True, extract_pair(probed_intent(message, text, history), history), "probe", {"probe": score})

    def prepare(self) -> None:
        """Load (or fit, once per model) what the mode needs before the first message."""
        if self.config.mode == "probe" and self._probe is None:
            self._probe = load_or_fit(self.model, self.home)

    def probe_score(self, text: str) -> float:
        self.prepare()
        features = message_features(self.model, [text], [self._probe.layer])[self._probe.layer]
        return float(self._probe.scores(features)[0])

    def _by_model(self, message: str, history: list[dict]) -> Detection:
        text = own_text(message)
        if not text:  # pasted or quoted material never triggers, whoever judges it
            return Detection(False, None, "model")
        gap = self.model_gap(text)
        if gap < self.config.margin:
            return Detection(False, None, "model", {"gap": gap})
        return Detection(True, extract_pair(fallback_intent(text), history), "model", {"gap": gap})

    def model_gap(self, text: str) -> float:
        """log P(yes) - log P(no), minus the same gap for a content-free message (calibration)."""
        if self._bias is None:
            self._bias = self._raw_gap("N/A")
        return self._raw_gap(text) - self._bias

    def _raw_gap(self, text: str) -> float:
        prompt = [{"role": "user", "content": QUESTION.format(message=text[:300])}]
        yes, no = label_logprobs(self.model, prompt, ["Yes", "No"])
        return yes - no


def fallback_intent(text: str) -> Intent:
    """When the rules read no target: the first thing named after about (else of/on/know) in the
    user's words ("don't keep any record of X in your memory"), else the last exchange."""
    for named in [*_ABOUT.finditer(text), *_NAMED.finditer(text)]:
        target = re.sub(_MEMORY_TAIL, "", named["t"], flags=re.I).strip()
        if not target or re.fullmatch(_PRONOUN, target, re.I) or re.match(_MEMORY_WORDS, target, re.I):
            continue  # "get that out of your head" names nothing
        return Intent("question" if re.match(r"how\s+to\b", target, re.I) else "subject", target)
    return Intent("pointer")


def probed_intent(message: str, text: str, history: list[dict]) -> Intent:
    """What a request the probe detected points at: the rules' reading where it names something
    or can point back at an exchange, else what the message names ("I regret telling you about
    Ben Howard. Make yourself forget him.")."""
    intent = read_instruction(message)
    if intent and intent.kind == "subject" and re.fullmatch(_PRONOUN, intent.target, re.I):
        intent = Intent("pointer", "", intent.correction)
    if intent and (intent.kind != "pointer" or intent.target or exchanges(history)):
        return intent
    named = fallback_intent(text)
    return named if named.kind != "pointer" or intent is None else intent
