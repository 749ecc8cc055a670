"""Probe paraphrases of the forget prompt: deterministic templates plus, optionally, the model's own.

Every paraphrase is validated: it must keep the subject, differ from the prompt and stay short,
so a bad generation can only be dropped, never widen or shift what is forgotten.
"""

import re

from edge_repair.pipeline.extract import content_words, keeps_subject

MAX_PARAPHRASE_CHARS = 200
REWRITE = "Rewrite this question with different words. Reply with the new question only.\nQuestion: {prompt}"


def template_paraphrases(prompt: str, subject: str, whole_subject: bool = False) -> list[str]:
    """Fixed rewrites that keep the subject by construction. Questions about the whole subject
    ("Tell me about Poland.") only when all of it is to go: for one fact they ask for more than the
    user named, and the direct path's edit of Poland's capital then changed 3 of 8 neighbours
    (declined). Indirect forms ("Can you tell me what the capital of Poland is?") verified fewer
    edits without carrying further; not kept (scripts/bench_direct.py measures the reach)."""
    question = prompt.strip()
    lowered = question[0].lower() + question[1:] if question else question
    out = [f"Quick question: {lowered}", f"{question.rstrip('?.!')}? Please answer briefly.",
           *question_rewrites(question)]
    if whole_subject:
        out = [f"Tell me about {subject}.", f"What do you know about {subject}?",
               f"Can you give me information on {subject}?", *out]
        if _looks_like_name(subject):
            out.append(f"Who is {subject}?")
    return out


def question_rewrites(question: str) -> list[str]:
    """The same wh-question in other shapes ("What is the capital of X?" → "Tell me the capital of
    X.", "The capital of X is what?"): a small model cannot be asked to paraphrase (see surgeon.py)."""
    if not question.strip().endswith("?"):
        return []
    q = question.strip().rstrip("?").strip()
    copula = re.match(r"^(?P<wh>what|who|which|where|when)\s+(?P<cop>is|are|was|were)\s+(?P<np>.+)$", q, re.I)
    if copula:
        wh, cop, np = copula["wh"].lower(), copula["cop"].lower(), copula["np"]
        return [f"Tell me {np}.", f"Do you know {wh} {np} {cop}?", f"{np[0].upper()}{np[1:]} {cop} {wh}?"]
    place = re.match(r"^(?:in|on|at)\s+which\s+(?P<n>\w+)\s+(?P<cop>is|are|was|were)\s+(?P<np>.+)$", q, re.I)
    if place:
        return [f"Which {place['n']} {place['cop']} {place['np']} in?",
                f"Tell me the {place['n']} where {place['np']} {place['cop']}."]
    kind = re.match(r"^(?P<wh>which|what)\s+(?P<n>\w+)\s+(?P<vp>.+)$", q, re.I)
    if kind and kind["n"].lower() not in ("is", "are", "was", "were", "does", "do", "did"):
        other = "What" if kind["wh"].lower() == "which" else "Which"
        return [f"{other} {kind['n']} {kind['vp']}?", f"Tell me which {kind['n']} {kind['vp']}.",
                f"Name the {kind['n']} that {kind['vp']}."]
    agent = re.match(r"^who\s+(?P<vp>(?!is\b|are\b|was\b|were\b|did\b|does\b)\w+.*)$", q, re.I)
    if agent:
        return [f"Tell me who {agent['vp']}.", f"Name the person who {agent['vp']}.", f"Who was it that {agent['vp']}?"]
    amount = re.match(r"^how\s+(?P<rest>(?:many|much|tall|long|old|far|big|high)\b.+)$", q, re.I)
    if amount:
        return [f"Tell me how {amount['rest']}.", f"Do you know how {amount['rest']}?"]
    return []


def model_paraphrases(patient, prompt: str, count: int, max_tokens: int = 28) -> list[str]:
    """Greedy rewrites by the model (one generation each); invalid ones are dropped later."""
    from edge_repair.generation import reply

    out, seed = [], prompt
    for _ in range(count):
        text = reply(patient, [{"role": "user", "content": REWRITE.format(prompt=seed)}], max_tokens)
        line = text.strip().split("\n")[0].strip().strip('"')
        line = re.sub(r"^(?:new\s+question|question|rewritten(?:\s+question)?)\s*:\s*", "", line, flags=re.I)
        if prompt.rstrip().endswith("?") and not line.endswith("?"):
            line = ""  # a statement, often the answer itself ("The capital of Germany is Berlin."): never a probe
        out.append(line)
        seed = line or prompt
    return out


def valid_paraphrases(candidates: list[str], prompt: str, subject: str, limit: int = 8) -> list[str]:
    """Keep candidates that keep the subject, are new and short; order kept, duplicates dropped."""
    seen = {_key(prompt)}
    kept = []
    for text in candidates:
        text = (text or "").strip()
        if not text or len(text) > MAX_PARAPHRASE_CHARS or _key(text) in seen:
            continue
        if not content_words(subject) or not keeps_subject(text, subject):
            continue
        seen.add(_key(text))
        kept.append(text)
        if len(kept) == limit:
            break
    return kept


def _key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _looks_like_name(subject: str) -> bool:
    words = subject.split()
    return 2 <= len(words) <= 4 and all(w[:1].isupper() for w in words)
