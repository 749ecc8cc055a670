"""Retain prompts for an edit: answers that must survive it (from the retain buffer)."""

DEFAULT_COUNT = 160  # the engine takes the first 128 as gate negatives, the rest as checks


def retain_prompts(count: int = DEFAULT_COUNT) -> list[str]:
    """A stable sample of the retain buffer.

    Deliberately the same for every forget request: the engine itself leaves out the prompts that are
    about the forget subject, and a stable set keeps its cached activations valid (a new set
    would cost a minute of capture per edit).
    """
    from edge_repair.retain.buffer import RetainBuffer

    return RetainBuffer.open().prompts()[:count]
