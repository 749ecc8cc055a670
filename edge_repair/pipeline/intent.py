"""Deterministic reading of a forget instruction: is it one, and what does it point at?

Anchored on an imperative addressed to the assistant at the start of a clause, so "don't forget
to call mum", "I forgot my keys" and "how do I make my phone forget a wifi network" never match.
"""

import re
from dataclasses import dataclass

from edge_repair.pipeline.screen import clauses, own_text

_LEAD = (r"^(?:(?:ok(?:ay)?|so|now|hey|alright|also|and|but|then|well|actually|yes|right|sorry|thanks)\b\W*)*"
         r"(?:please\s+)?"
         r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?"
         r"|i(?:\s+(?:want|need|would\s+like)|\s*'d\s+like)\s+you\s+to\s+"
         r"|you\s+(?:should|must|need\s+to|have\s+to)\s+"
         r"|(?:go\s+ahead\s+and|make\s+sure\s+(?:that\s+)?you)\s+)?"
         r"(?:please\s+)?(?:make\s+yourself\s+|try\s+to\s+)?")
_FORGET = r"(?:forget|unlearn|stop\s+(?:remembering|knowing)|no\s+longer\s+(?:remember|know))"
_EDIT = r"(?:remove|delete|erase|wipe|purge|scrub|scrap|drop|get\s+rid\s+of|discard)"
MEMORY_NOUNS = r"(?:memory|knowledge|training(?:\s+data)?|weights|brain|mind|model|head)"
_MEMORY = (rf"(?:\s+(?:from|out\s+of)\s+(?:(?:your\s+)?{MEMORY_NOUNS}"
           r"|what\s+you\s+(?:know|remember|have\s+learn(?:ed|t))))")
_POINTER = (r"(?:this|that|it|this\s+one|that\s+one|all\s+(?:of\s+)?(?:this|that)"
            r"|(?:your|the)\s+(?:last\s+|previous\s+|earlier\s+)?(?:answer|response|reply|statement|claim)"
            r"(?:\s+you\s+(?:just\s+)?(?:gave|made|said|wrote))?"
            r"|(?:this|that)\s+(?:answer|response|reply|information|info|fact|claim|statement|data|knowledge|memory)"
            r"|what\s+you\s+(?:just\s+)?(?:said|told\s+me|wrote|answered))")
_KNOWLEDGE = (r"(?:everything|anything|all|all\s+(?:the\s+)?(?:information|info|data|knowledge|facts|details)"
              r"|(?:any|the)\s+(?:information|info|data|knowledge|facts?|details)"
              r"|what(?:ever)?\s+you\s+(?:know|remember|learned|have)"
              r"|(?:all\s+)?your\s+(?:knowledge|memory|memories|information|info|data))"
              r"(?:\s+you\s+(?:know|have|remember|hold|keep|store))?\s+(?:about|on|of|regarding|concerning|related\s+to)\s+")
_RETRACTION = re.compile(r"^(?:about\s+)?(?:it|that|this)?$"
                         r"|^(?:about\s+)?(?:what\s+)?i\s+(?:just\s+)?(?:said|asked|wrote|typed|meant)"
                         r"|^(?:about\s+)?(?:my|the)\s+(?:last\s+|previous\s+)?(?:question|message|request|typo)"
                         r"|^(?:all\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier)?\s*(?:instructions|rules|prompt)"
                         r"|^to\b|^the\s+rest", re.I)
_CORRECTION = re.compile(r"\b(?:wrong|incorrect|not\s+(?:true|correct|right)|false|inaccurate|untrue|mistaken|a\s+lie)\b", re.I)
_NOT_WANTED = re.compile(r"^i(?:\s+(?:do\s+not|don't)\s+want\s+you\s+to|(?:'d|\s+would)\s+rather\s+you\s+(?:didn't|did\s+not|not))"
                         r"\s+(?:know|remember)\s+(?:anything\s+)?(?:about\s+)?(?P<t>.+)$", re.I)
_TRAILING_WORDS = r"(?:\s+(?:anymore|any\s+more|again|please|for\s+me|for\s+good|forever|completely|entirely|now|right\s+now))+"
TRAILING = _TRAILING_WORDS + "$"
# "I'd like the boiling point of water removed from your knowledge": the wish, not the imperative.
_WANT_GONE = re.compile(r"^(?:please\s+)?i(?:'d|\s+would)?\s+(?:like|want|need)\s+(?!you\b)(?P<t>.+?)\s+"
                        r"(?P<verb>removed|deleted|erased|wiped|purged|forgotten|unlearned|unlearnt|gone)"
                        rf"(?P<memory>{_MEMORY})?(?:{_TRAILING_WORDS})?\W*$", re.I)
# Setting something aside for now is not asking to unlearn it ("Forget about the budget for now, …").
_FOR_NOW = re.compile(r"\bfor\s+(?:now|the\s+moment|a\s+(?:moment|second|minute|bit|while))\b", re.I)
# "Forget about the weather, let's talk about football": a change of topic, not a request.
_TOPIC_SWITCH = re.compile(r"\blet'?s\s+(?:talk|chat|move\s+on|focus|discuss|switch|change)\b|\binstead\b", re.I)


@dataclass
class Intent:
    kind: str          # "pointer" (this/that: the last exchange) | "subject" | "question" | "fact"
    target: str = ""   # the words naming what to forget ("" for a pointer)
    correction: bool = False  # the user says the answer was wrong (misinformation)


def read_instruction(message: str) -> Intent | None:
    """The forget intent in the user's own words, or None when the message is ordinary chat."""
    text = own_text(message)
    if not text:
        return None
    correction, switching = bool(_CORRECTION.search(text)), bool(_TOPIC_SWITCH.search(text))
    for clause in clauses(text):
        intent = _read_clause(clause, correction, switching)
        if intent:
            return intent
    return None


def mentions_forgetting(message: str) -> bool:
    """Any forgetting vocabulary at all in the user's own words (the model looks closer at these)."""
    text = own_text(message)
    return bool(re.search(r"\b(?:forget\w*|forgot\w*|unlearn\w*|erase|wipe|purge)\b", text, re.I))


def has_imperative(message: str) -> bool:
    """Some clause starts with a forget/edit verb addressed to the assistant (read, accepted or not)."""
    text = own_text(message)
    for clause in clauses(text):
        lead = re.match(_LEAD, clause, re.I)
        if re.match(rf"(?:{_FORGET}|{_EDIT})(?![\w-])", clause[lead.end():] if lead else clause, re.I):
            return True
    return False


def _read_clause(clause: str, correction: bool, switching: bool = False) -> Intent | None:
    unwanted = _NOT_WANTED.match(clause)
    if unwanted:
        return Intent("subject", re.sub(TRAILING, "", unwanted["t"], flags=re.I).strip(), correction)
    wish = _WANT_GONE.match(clause)
    if wish and (wish["memory"] or re.match(r"forgotten|unlearn", wish["verb"], re.I)):  # not "X removed from a list"
        return _read_object(wish["t"], True, correction)
    lead = re.match(_LEAD, clause, re.I)
    rest = clause[lead.end():] if lead else clause
    verb = re.match(rf"(?P<v>{_FORGET}|{_EDIT})(?![\w-])\s*(?P<about>about\s+)?", rest, re.I)
    if not verb or (switching and verb["about"] and re.match(_FORGET, verb["v"], re.I)):
        return None
    obj = rest[verb.end():].strip()
    forgetting = re.match(_FORGET, verb["v"], re.I) is not None
    if forgetting and _FOR_NOW.search(obj):
        return None
    return _read_object(obj, forgetting, correction, idiom=forgetting or verb["v"].lower() == "drop")


def _read_object(obj: str, forgetting: bool, correction: bool, idiom: bool = False) -> Intent | None:
    """`idiom`: the verb makes "<verb> it" mean "never mind" ("forget it", "drop it")."""
    obj = re.sub(TRAILING, "", obj, flags=re.I).strip()
    stripped = re.sub(rf"{_MEMORY}$", "", obj, flags=re.I).strip()
    from_memory, obj = stripped != obj, stripped
    if re.fullmatch(_POINTER, obj, re.I):
        if obj.lower() == "it" and idiom and not correction:
            return None  # "forget it" is an idiom for "never mind"
        return Intent("pointer", "", correction)
    pointer_about = re.match(r"what\s+you\s+(?:just\s+)?(?:said|told\s+me|wrote)\s+about\s+(?P<t>.+)$", obj, re.I)
    if pointer_about:
        return Intent("pointer", pointer_about["t"], correction)
    knowledge = re.match(_KNOWLEDGE, obj, re.I)
    if knowledge:
        return Intent("subject", obj[knowledge.end():].strip(), correction)
    if not (forgetting or from_memory):
        return None  # "remove the duplicates from this list" is an editing request, not forgetting
    if not obj or _RETRACTION.match(obj):
        return None
    fact = re.match(r"the\s+(?:fact|claim|idea)\s+that\s+(?P<t>.+)$", obj, re.I)
    if fact:
        return Intent("fact", fact["t"], correction)
    if re.match(r"(?:what|who|whom|where|when|which|why|how|whether)\b", obj, re.I):
        return Intent("question", obj, correction)
    return Intent("subject", obj, correction)
