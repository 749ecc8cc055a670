"""What the user is shown: the confirmation echo and the acknowledgement (paper Table 4)."""

from edge_repair.pipeline.extract import ForgetPair

MAX_ECHO = 160


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO - 1] + "…"


def confirmation_text(pair: ForgetPair) -> str:
    answer = _short(pair.response) if pair.response else "(the model's current answer)"
    return (f"I will forget what I know about: {pair.subject}\n"
            f"  question: {_short(pair.prompt)}\n"
            f"  answer:   {answer}")


def acknowledgement(outcome) -> str:
    if not outcome.detected:
        return "No forget request found; nothing was changed."
    if not outcome.confirmed or outcome.pair is None or not outcome.verified:
        return outcome.note or "Nothing was changed."
    if outcome.pair.correction:
        return "Done. The incorrect information has been removed."
    return f"Done. Information related to {outcome.pair.subject} has been removed."
