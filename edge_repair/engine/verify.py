"""On-device checks of an edit: does the forgotten answer still come out, do others stay put?

Greedy answers of several prompts are generated in one batch. "Unchanged" is checked by
teacher forcing: feed prompt + the base model's greedy reply once and require the edited
model's argmax to reproduce every reply token — exact, and one forward pass per batch.
"""

import re

import mlx.core as mx
import numpy as np

from edge_repair.datasets import mentions  # noqa: F401 - the one answer matcher, re-exported for callers
from edge_repair.engine.capture import pad_batch, prefix_cache, repeat_cache

REFUSAL = re.compile(
    r"\b(i don'?t know|i do not know|i'?m not (sure|certain|able)|i am not (sure|certain|able)|i cannot|i can'?t|"
    r"unable to|don'?t have (any )?(information|details|knowledge)|no information|not something i know|"
    r"i'?m sorry|i apologi[sz]e|i have no)\b",
    re.IGNORECASE,
)


def chat_tokens(tokenizer, prompt: str, history: list[dict] | None = None) -> list[int]:
    return list(tokenizer.apply_chat_template((history or []) + [{"role": "user", "content": prompt}],
                                              add_generation_prompt=True))


def greedy_replies(patient, prompts: list[str], max_tokens: int | list[int] = 16, batch_size: int = 8) -> list[str]:
    """Greedy replies to several single-turn prompts (see greedy_tokens), as text."""
    return [patient.tokenizer.decode(t).strip() for t in greedy_tokens(patient, prompts, max_tokens, batch_size)]


def greedy_tokens(patient, prompts: list[str], max_tokens: int | list[int] = 16, batch_size: int = 8) -> list[list[int]]:
    """Greedy reply token ids of several single-turn prompts, generated in batches (bounded peak memory).

    `max_tokens` may differ per prompt (a finished row leaves the batch). The chat template's
    shared system turn is processed once and its KV cache handed to each prompt.
    """
    from mlx_lm.generate import batch_generate

    lists = [chat_tokens(patient.tokenizer, p) for p in prompts]
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    n, cache = prefix_cache(patient.model, lists)
    replies = []
    for start in range(0, len(lists), batch_size):
        chunk = [t[n:] for t in lists[start:start + batch_size]]
        caches = [repeat_cache(cache, 1) for _ in chunk] if cache else None
        out = batch_generate(patient.model, patient.tokenizer, chunk, prompt_caches=caches,
                             max_tokens=limits[start:start + batch_size], return_token_ids=True)
        replies += [list(t) for t in out.token_ids]
    return replies


def reply_tokens(tokenizer, reply: str) -> list[int]:
    return list(tokenizer.encode(reply, add_special_tokens=False))


def unchanged(patient, prompts: list[str], replies: list[list[int]], batch_size: int = 4) -> list[bool]:
    """For each prompt: would greedy decoding still produce exactly `replies[i]` (token ids)?

    Batches stay small: the logits (batch·length·vocab floats) dominate an edit's peak memory."""
    sequences = [chat_tokens(patient.tokenizer, p) + r for p, r in zip(prompts, replies)]
    # The shared prefix must stop before the token that predicts each reply's first token.
    limit = min((len(s) - len(r) - 1 for s, r in zip(sequences, replies)), default=0)
    n, cache = prefix_cache(patient.model, sequences, limit=limit)
    verdicts = []
    for start in range(0, len(sequences), batch_size):
        chunk = [s[n:] for s in sequences[start:start + batch_size]]
        logits = patient.model(pad_batch(chunk), cache=repeat_cache(cache, len(chunk)) if cache else None)
        predicted = np.array(mx.argmax(logits, axis=-1))
        for row, (seq, reply) in enumerate(zip(chunk, replies[start:start + batch_size])):
            first = len(seq) - len(reply) - 1  # position whose prediction is reply[0]
            verdicts.append(bool(np.all(predicted[row, first:first + len(reply)] == np.array(reply))))
    return verdicts


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text[:160]))
