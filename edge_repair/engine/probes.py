"""The prompts an edit is built and checked with: phrasings, near misses, the refusal context.

Nothing here is written to disk; the caller keeps probes in memory or sealed.
"""

import re

from edge_repair import datasets

# Known questions answered with a refusal: in this context the model refuses ~31/32 fact questions
# (two fictional shots: ~21/32), so the residual shift it produces is the edit's target.
REFUSAL = "I'm sorry, I don't know that."
REFUSAL_SHOTS = [
    ("What is the capital of Spain?", REFUSAL),
    ("Who painted The Starry Night?", REFUSAL),
    ("What is the chemical symbol for oxygen?", REFUSAL),
]
STOPWORDS = set("""a an the is are was were be been of in on at to for from by with and or but it its this that
these those as what which who whom whose where when why how do does did i you he she they we me my your our
their his her them us not no yes so very also can could would should will shall may might must than then there
here about into over under out up down just only some any all each most more other such own same too s t
tell name called know answer
works work worked lives lived loves loved enjoys likes born died favourite favorite hobby job""".split())


def probe_prompts(prompt: str, paraphrases: list[str]) -> list[str]:
    """The forget prompt and its distinct paraphrases, in order."""
    seen, out = set(), []
    for p in [prompt, *paraphrases]:
        key = p.strip().lower()
        if p.strip() and key not in seen:
            seen.add(key)
            out.append(p.strip())
    return out


def refusal_context() -> list[dict]:
    messages = []
    for question, answer in REFUSAL_SHOTS:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


def neighbour_prompts(prompt: str, subject: str | None, substitutes: list[str]) -> list[str]:
    """The forget prompt with its subject swapped for each held-out substitute ([] without a subject in it).

    Units of similar edits add up on such neighbours, so the caller checks them on the edited model,
    earlier edits included (measured: two capital edits together turned 11 of 13 other capitals into
    refusals while 2 of 4 neighbours still passed, hence eight and a strict bar)."""
    return _swapped(prompt, named_part(subject), substitutes) if subject else []


# Other questions about the same subject: negatives that keep a "fact"-scoped edit to its fact
# (forgetting Japan's capital must not forget its language).
SAME_SUBJECT = ["Tell me about {}.", "What is {} known for?", "Write one sentence about {}.",
                "Give me a fun fact about {}.", "What do you think of {}?", "Describe {} briefly.",
                "Why is {} interesting?", "What is the history of {}?"]


def near_miss_prompts(prompts: list[str], subject: str | None, substitutes: list[str], per_prompt: int = 8,
                      keep_subject: bool = False) -> list[str]:
    """The hardest negatives: the forget prompts with their subject swapped for `substitutes` (each
    prompt gets the next `per_prompt` of them), plus (with `keep_subject`) other questions about
    the same subject.

    Without a subject found in the prompts, the shipped generic questions stand in.
    """
    subject = named_part(subject) if subject else subject
    others = [o for o in substitutes if o.lower() != (subject or "").lower()]
    if subject and others and any(_name_pattern(subject).search(p) for p in prompts):
        out = []
        for i, prompt in enumerate(prompts):
            out += _swapped(prompt, subject, [others[(i * per_prompt + k) % len(others)] for k in range(per_prompt)])
        if keep_subject:
            out += [template.format(subject) for template in SAME_SUBJECT]
        return out
    return datasets.retain_prompts()[-per_prompt * len(prompts):]


def _swapped(prompt: str, name: str, substitutes: list[str]) -> list[str]:
    """`prompt` with `name` replaced by each substitute ([] when the name is not in it)."""
    pattern = _name_pattern(name)
    return [pattern.sub(lambda _: o, prompt) for o in substitutes] if pattern.search(prompt) else []


def _name_pattern(name: str) -> re.Pattern:
    """`name` as a whole word: the symbol "Ca" must not match inside "chemical" (measured: every
    near miss and neighbour of Ca's edit read "the chemiCol symbol Co")."""
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)


def named_part(subject: str) -> str:
    """The name inside a subject phrase: "capital of Germany" -> "Germany"; a subject that is itself
    a name or title stays whole ("Maya Taylor", "On the Origin of Species").

    Swapping only the name keeps near misses well formed ("What is the capital of Spain?").
    """
    if subject[:1].isupper():
        return subject
    names = re.findall(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*", subject)
    return max(names, key=len) if names else subject


def answer_terms(prompt: str, response: str) -> list[str]:
    """Words of the response's first sentence that carry the answer (not in the prompt, not filler).

    "The capital of France is Paris." for "What is the capital of France?" -> ["Paris"]. A
    possessive of an asked word is the subject, not the answer ("Haddad's" for "… Haddad's hobby?").
    """
    first = re.split(r"(?<=[.!?])\s", response.strip(), maxsplit=1)[0]
    asked = {w.lower() for w in re.findall(r"\w+", prompt)}
    words = [w for w in re.findall(r"\w[\w'-]*", first)
             if re.sub(r"['’]s$", "", w).lower() not in asked and w.lower() not in STOPWORDS]
    salient = [w for w in words if w[0].isupper() or w[0].isdigit()]
    return (salient or words)[:3]


def subject_terms(prompts: list[str], responses: list[str]) -> list[str]:
    """Every phrasing's answer words, once each: what the replies say about a whole subject (a
    person's job and hobby beside the birthplace that "Tell me about…" names in capitals)."""
    terms = {}
    for prompt, response in zip(prompts, responses):
        for word in answer_terms(prompt, response):
            terms.setdefault(word.lower(), word)
    return list(terms.values())
