"""On-device checks of an edit: does the forgotten answer still come out, do others stay put?

Greedy answers of several prompts are generated in one batch. "Unchanged" is checked by
teacher forcing: feed prompt + the base model's greedy reply once and require the edited
model's argmax to reproduce every reply token — exact, and one forward pass per batch.
"""

import re

import mlx.core as mx
import numpy as np

from edge_repair.datasets import mentions  # noqa: F401 - the one answer matcher, re-exported for callers
from edge_repair.engine.capture import pad_batch

REFUSAL = re.compile(
    r"\b(i don'?t know|i do not know|i'?m not (sure|certain|able)|i am not (sure|certain|able)|i cannot|i can'?t|"
    r"unable to|don'?t have (any )?(information|details|knowledge)|no information|not something i know|"
    r"i'?m sorry|i apologi[sz]e|i have no)\b",
    re.IGNORECASE,
)


def chat_tokens(tokenizer, prompt: str, history: list[dict] | None = None) -> list[int]:
    return list(tokenizer.apply_chat_template((history or []) + [{"role": "user", "content": prompt}],
                                              add_generation_prompt=True))


def greedy_replies(patient, prompts: list[str], max_tokens: int = 16, batch_size: int = 8) -> list[str]:
    """Greedy replies to several single-turn prompts, generated in batches (bounded peak memory)."""
    from mlx_lm.generate import batch_generate

    replies = []
    for start in range(0, len(prompts), batch_size):
        tokens = [chat_tokens(patient.tokenizer, p) for p in prompts[start:start + batch_size]]
        replies += [t.strip() for t in batch_generate(patient.model, patient.tokenizer, tokens, max_tokens=max_tokens).texts]
    return replies


def reply_tokens(tokenizer, reply: str) -> list[int]:
    return list(tokenizer.encode(reply, add_special_tokens=False))


def unchanged(patient, prompts: list[str], replies: list[list[int]], batch_size: int = 8) -> list[bool]:
    """For each prompt: would greedy decoding still produce exactly `replies[i]` (token ids)?"""
    sequences = [chat_tokens(patient.tokenizer, p) + r for p, r in zip(prompts, replies)]
    verdicts = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        predicted = np.array(mx.argmax(patient.model(pad_batch(chunk)), axis=-1))
        for row, (seq, reply) in enumerate(zip(chunk, replies[start:start + batch_size])):
            first = len(seq) - len(reply) - 1  # position whose prediction is reply[0]
            verdicts.append(bool(np.all(predicted[row, first:first + len(reply)] == np.array(reply))))
    return verdicts


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text[:160]))
