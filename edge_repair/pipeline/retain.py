"""Retain prompts for verification: answers that must survive an edit (from the retain buffer)."""

from edge_repair.pipeline.extract import content_words

DEFAULT_COUNT = 160  # the engine takes the first 128 as gate negatives, the rest as checks


def retain_prompts_for(subject: str, count: int = DEFAULT_COUNT) -> list[str]:
    """A reproducible sample of the retain buffer, minus prompts that touch the subject."""
    from edge_repair.retain.buffer import RetainBuffer

    words = set(content_words(subject))
    pool = [p for p in RetainBuffer.open().prompts() if not words & set(content_words(p))]
    return pool[:count]
