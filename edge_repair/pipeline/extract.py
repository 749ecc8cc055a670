"""From a forget intent to the forget pair (p_f, r_f): taken from the history or synthesised."""

import re
from dataclasses import dataclass

from edge_repair.pipeline.intent import Intent

STOP_WORDS = frozenset(
    "a an the of in on at to for from by with about and or is are was were be been do does did what who whom "
    "where when which why how whether my your his her its our their this that these those me you it there here many much".split()
)
_WH_COPULA = re.compile(r"^(?P<wh>what|who|whom|where|when|which|why|how\s+\w+|how)\s+(?P<np>.+?)\s+(?P<cop>is|are|was|were)$", re.I)
_HOW_TO = re.compile(r"^how\s+to\s+(?P<rest>.+)$", re.I)


@dataclass
class ForgetPair:
    prompt: str                 # p_f
    response: str | None        # r_f; None: the patient's own greedy answer
    subject: str                # what it is about, kept by every paraphrase
    source: str                 # "history" | "instruction"
    correction: bool = False    # the user said the answer was wrong
    whole_subject: bool = False  # "forget everything about X": other facts about X go too


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w'-]+", text.lower()) if w not in STOP_WORDS and len(w) > 1]


def keeps_subject(text: str, subject: str) -> bool:
    """True when every content word of the subject appears in `text` (the validation rule)."""
    words = set(re.findall(r"[\w'-]+", text.lower()))
    return all(w in words for w in content_words(subject))


def exchanges(history: list[dict]) -> list[tuple[str, str]]:
    """(user, assistant) pairs of the history, oldest first."""
    pairs, question = [], None
    for message in history:
        if message.get("role") == "user":
            question = message.get("content", "")
        elif message.get("role") == "assistant" and question is not None:
            pairs.append((question, message.get("content", "")))
            question = None
    return pairs


def extract_pair(intent: Intent, history: list[dict]) -> ForgetPair | None:
    """The pair to forget, or None when the user points back but there is nothing to point at."""
    past = exchanges(history)
    subject = strip_determiners(intent.target)
    if intent.kind == "pointer":
        chosen = _mentioning(past, subject) if subject else None
        chosen = chosen or (past[-1] if past else None)
        if chosen is None:
            return None
        return ForgetPair(chosen[0], chosen[1], subject or subject_of(chosen[0]), "history", intent.correction)
    prompt, subject = synthesise(intent)
    earlier = _mentioning(past, subject)
    if earlier:  # the user asked about it before: forget what the model actually said
        return ForgetPair(earlier[0], earlier[1], subject, "history", intent.correction, intent.kind == "subject")
    response = _sentence(intent.target) if intent.kind == "fact" else None
    return ForgetPair(prompt, response, subject, "instruction", intent.correction, intent.kind == "subject")


def synthesise(intent: Intent) -> tuple[str, str]:
    """A question that elicits the knowledge named in the instruction, and its subject."""
    target = intent.target.strip()
    if intent.kind == "question":
        copula = _WH_COPULA.match(target)
        if copula:
            noun_phrase = copula["np"]
            return f"{copula['wh'].capitalize()} {copula['cop']} {noun_phrase}?", strip_determiners(noun_phrase)
        how_to = _HOW_TO.match(target)
        if how_to:
            return f"How do you {how_to['rest']}?", strip_determiners(how_to["rest"])
        return f"{target[0].upper()}{target[1:]}?", subject_of(target)
    if intent.kind == "fact":
        return f"Is it true that {target}?", subject_of(target)
    return f"Tell me about {target}.", strip_determiners(target)


def strip_determiners(text: str) -> str:
    return re.sub(r"^(?:the|a|an)\s+", "", text.strip(), flags=re.I).strip(" .?!")


def subject_of(question: str) -> str:
    """The subject of a question: its longest run of capitalised words, else what follows about/of/is."""
    body = re.sub(r"^\W*\w+", "", question.strip())  # the first word is capitalised anyway
    names = re.findall(r"\b(?:[A-Z][\w'.-]*)(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'.-]*)*", body)
    names = [n.strip(" .?!") for n in names if content_words(n)]
    if names:
        return max(names, key=len)
    for tail in re.finditer(r"\b(?:about|of|is|are|was|were|does|do)\s+(?P<np>[^?.!]+)", question, re.I):
        if content_words(tail["np"]):
            return strip_determiners(tail["np"])
    return " ".join(content_words(question)) or question.strip(" ?.!")


def _mentioning(past: list[tuple[str, str]], subject: str) -> tuple[str, str] | None:
    if not content_words(subject):
        return None
    for question, answer in reversed(past):
        if keeps_subject(question, subject):
            return question, answer
    return None


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return f"{text[0].upper()}{text[1:]}." if text else text
