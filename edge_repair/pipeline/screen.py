"""What the user typed themselves: only that text may ever trigger a forget.

Quoted spans, code blocks, '>' quote lines and long pastes are someone else's words (an article,
a document, a model's output); a "forget X" inside them is content, never an instruction.
"""

import re

MAX_OWN_CHARS = 300       # longer messages are treated as pasted material: use !forget instead
MAX_OWN_SENTENCES = 4

_FENCED = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_DOUBLE_QUOTED = re.compile(r"\"[^\"]*(\"|$)|“[^”]*(”|$)|«[^»]*(»|$)")
_SINGLE_QUOTED = re.compile(r"(?:(?<=\s)|^)'[^'\n]{3,}'(?=[\s.,;:!?]|$)")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


def normalise(text: str) -> str:
    return text.replace("’", "'").replace("‘", "'").replace("\r\n", "\n")


def own_text(message: str) -> str:
    """The user's own words in `message`, or '' when the message is (mostly) pasted material."""
    text = normalise(message)
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))
    text = _DOUBLE_QUOTED.sub(" ", text)
    text = _SINGLE_QUOTED.sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    if looks_pasted(text):
        return ""
    return text


def looks_pasted(text: str) -> bool:
    """Long or multi-paragraph text reads as a pasted document, not a short instruction."""
    if len(text) > MAX_OWN_CHARS or "\n\n" in text:
        return True
    return len(_SENTENCE_END.findall(text)) > MAX_OWN_SENTENCES


def clauses(text: str) -> list[str]:
    """Sentences and comma/semicolon/colon clauses (case kept), for anchored imperative patterns."""
    parts = re.split(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+|(?<=[;:\n])\s*|,\s+|\s+-+\s+|\s+(?:and|then|so)\s+(?=please\b|forget\b|remove\b|delete\b|erase\b|unlearn\b)", text)
    return [p.strip(" .!?;:") for p in parts if p and p.strip(" .!?;:")]
