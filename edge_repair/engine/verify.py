"""On-device checks of an edit: does the forgotten answer still come out, do others stay put?

Greedy answers of several prompts are generated in one batch. "Unchanged" is checked by
teacher forcing: feed prompt + the base model's greedy reply once and require the edited
model's argmax to reproduce every reply token — exact, and one forward pass per batch.
"""

import math
import re

import mlx.core as mx
import numpy as np

from edge_repair.datasets import mentions  # noqa: F401 - the one answer matcher, re-exported for callers
from edge_repair.engine.capture import (logits_only_at, pad_batch, prefix_cache, repeat_cache, replayed_logits,
                                        shared_prefix)
from edge_repair.engine.quality import token_losses

# Reply positions a teacher-forced batch predicts at once: its logits are rows × positions × the
# vocabulary (49k words on the default model), held twice. Measured on 8 rows of 24 draft tokens:
# 165 MB over the weights, an edit's peak (1.33× the chat peak); batches of 96 positions took 120 MB.
POSITION_BUDGET = 96

REFUSAL = re.compile(
    r"\b(i don'?t know|i do not know|i'?m not (sure|certain|able)|i am not (sure|certain|able)|i cannot|i can'?t|"
    r"unable to|don'?t have (any )?(information|details|knowledge)|no information|not something i know|"
    r"i'?m sorry|i apologi[sz]e|i have no|i never knew|i (?:don'?t|do not) (?:remember|recall)|"
    r"i (?:don'?t|do not) think i (?:can|could|know))\b",
    re.IGNORECASE,
)


def chat_tokens(tokenizer, prompt: str, history: list[dict] | None = None) -> list[int]:
    return list(tokenizer.apply_chat_template((history or []) + [{"role": "user", "content": prompt}],
                                              add_generation_prompt=True))


def template_prefix(tokenizer, history: list[dict] | None = None) -> list[int]:
    """The chat template's tokens before a user message (after `history`): what two unlike
    one-word prompts share."""
    a, b = (chat_tokens(tokenizer, word, history) for word in ("Hello", "Why"))
    return a[:shared_prefix([a, b])]


def greedy_replies(patient, prompts: list[str], max_tokens: int | list[int] = 16, batch_size: int = 8) -> list[str]:
    """Greedy replies to several single-turn prompts (see greedy_tokens), as text."""
    return [patient.tokenizer.decode(t).strip() for t in greedy_tokens(patient, prompts, max_tokens, batch_size)]


def greedy_tokens(patient, prompts: list[str], max_tokens: int | list[int] = 16, batch_size: int = 8,
                  drafts: list[list[int]] | None = None) -> list[list[int]]:
    """Greedy reply token ids of several single-turn prompts, generated in batches (bounded peak memory).

    `max_tokens` may differ per prompt (a finished row leaves the batch). The chat template's
    shared system turn is processed once and its KV cache handed to each prompt. `drafts`: a
    guess at each reply (e.g. an earlier try's, ending in the stop token if it stopped); the part
    of it the model would generate itself is confirmed in one teacher-forced pass instead of a
    decoding step per token, and generation resumes after it (speculative decoding, exact up
    to float near-ties between a batched pass and step-by-step decoding).
    """
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    confirmed = _confirmed(patient, prompts, drafts, limits) if drafts else [([], False)] * len(prompts)
    pending = [i for i, (_, done) in enumerate(confirmed) if not done]
    lists = [chat_tokens(patient.tokenizer, prompts[i]) + confirmed[i][0] for i in pending]
    generated = _generated(patient, lists, [limits[i] - len(confirmed[i][0]) for i in pending], batch_size)
    replies = [list(tokens) for tokens, _ in confirmed]
    for i, tokens in zip(pending, generated):
        replies[i] += tokens
    return replies


def _generated(patient, lists: list[list[int]], limits: list[int], batch_size: int) -> list[list[int]]:
    from mlx_lm.generate import batch_generate

    if not lists:
        return []
    n, cache = prefix_cache(patient.model, lists)
    replies = []
    for start in range(0, len(lists), batch_size):
        chunk = [t[n:] for t in lists[start:start + batch_size]]
        caches = [repeat_cache(cache, 1) for _ in chunk] if cache else None
        out = batch_generate(patient.model, patient.tokenizer, chunk, prompt_caches=caches,
                             max_tokens=limits[start:start + batch_size], return_token_ids=True)
        replies += [list(t) for t in out.token_ids]
    return replies


def _confirmed(patient, prompts: list[str], drafts: list[list[int]], limits: list[int]) -> list[tuple[list[int], bool]]:
    """Per prompt: (the reply tokens greedy decoding would start with, as far as the draft shows
    them, plus the model's own next token where the draft went wrong; is the reply complete?)."""
    stops = set(patient.tokenizer.eos_token_ids)
    drafts = [list(d[:limit]) for d, limit in zip(drafts, limits)]
    rows = [i for i, d in enumerate(drafts) if d]
    out = [([], False) for _ in prompts]
    # Batches of 8: measured on 14 rows of 24 draft tokens, a batch of 14 peaked 165 MB over the
    # weights (two copies of its logits) and took 0.65 s; two batches peak 93 MB and take 0.56 s.
    predictions = forced_predictions(patient, [prompts[i] for i in rows], [drafts[i] for i in rows], batch_size=8)
    for i, predicted in zip(rows, predictions):
        draft = drafts[i]
        wrong = np.flatnonzero(predicted != np.array(draft))
        tokens = draft[: wrong[0] + 1] if len(wrong) else draft
        if len(wrong):
            tokens[-1] = int(predicted[wrong[0]])
        ended = next((k for k, t in enumerate(tokens) if t in stops), None)
        if ended is not None:
            out[i] = (tokens[:ended], True)
        else:
            out[i] = (tokens, len(tokens) >= limits[i])
    return out


def first_tokens(patient, prompts: list[str], replay: tuple | None = None, batch_size: int = 32) -> list[int]:
    """The first token of each prompt's greedy reply, from one forward pass per batch (no
    generation loop: a generating row costs ~12 MB of batched KV cache). `replay`: see
    forced_predictions, or (layer, residuals, n) with residuals that leave out the first n tokens
    (capture.last_tokens). Batches of 32: measured on 64 questions about people, one batch of 64
    peaked ~200 MB above the weights, two of 32 ~110 MB (both sizes run at ~32k token-layers per
    second here)."""
    lists = [chat_tokens(patient.tokenizer, p) for p in prompts]
    n, cache = prefix_cache(patient.model, lists)
    predicted = []
    for start in range(0, len(lists), batch_size):
        chunk = [t[n:] for t in lists[start:start + batch_size]]
        logits = _logits_at(patient, chunk, [[len(t) - 1] for t in chunk], n, cache, replay, start)
        predicted += np.array(mx.argmax(logits, axis=-1))[:, 0].tolist()
    return predicted


def _logits_at(patient, chunk: list[list[int]], positions: list[list[int]], n: int, cache: list | None,
               replay: tuple | None, start: int) -> mx.array:
    """One batch's logits (rows, positions, vocabulary) at `positions` of each token list after the
    n-token shared prefix (`cache`); with `replay`, from the stored residuals of rows start… ."""
    caches = repeat_cache(cache, len(chunk)) if cache else None
    with logits_only_at(patient.model, mx.array(positions)):
        if replay is None:
            logits = patient.model(pad_batch(chunk), cache=caches)
        else:
            layer, stored, *skipped = replay  # rows may start after a prefix already (capture.last_tokens)
            hidden = [mx.array(h[n - (skipped[0] if skipped else 0):]) for h in stored[start:start + len(chunk)]]
            logits = replayed_logits(patient.model, layer, hidden, caches)
    return logits


def reply_tokens(tokenizer, reply: str) -> list[int]:
    return list(tokenizer.encode(reply, add_special_tokens=False))


def unchanged(patient, prompts: list[str], replies: list[list[int]], batch_size: int = 8,
              replay: tuple[int, list] | None = None) -> list[bool]:
    """For each prompt: would greedy decoding still produce exactly `replies[i]` (token ids)?"""
    return [bool(np.all(p == np.array(r))) for p, r in
            zip(forced_predictions(patient, prompts, replies, batch_size, replay), replies)]


def forced_predictions(patient, prompts: list[str], replies: list[list[int]], batch_size: int = 8,
                       replay: tuple[int, list] | None = None) -> list[np.ndarray]:
    """Teacher forcing: for each prompt, the model's greedy token at every position of `replies[i]`
    (non-empty token ids) given the reply tokens before it. One forward pass per batch.

    `replay`: (layer, each prompt + reply's residual entering that layer), valid while every edit
    lies at or above it; then only the upper blocks run (over the tokens after the shared prefix,
    whose cache the current model computes once)."""
    return [row for batch, logits in _forced_logits(patient, prompts, replies, batch_size, replay)
            for row in _per_reply(np.array(mx.argmax(logits, axis=-1)), batch)]


def forced_losses(patient, prompts: list[str], replies: list[list[int]], batch_size: int = 8) -> list[np.ndarray]:
    """Teacher forcing: the model's loss (nats) at every token of `replies[i]` after prompt i. One
    forward pass per batch, the output head at the reply positions only."""
    out = []
    for batch, logits in _forced_logits(patient, prompts, replies, batch_size):
        targets = mx.array([r + [0] * (logits.shape[1] - len(r)) for r in batch])
        out += _per_reply(token_losses(logits, targets), batch)
    return out


def _forced_logits(patient, prompts: list[str], replies: list[list[int]], batch_size: int,
                   replay: tuple[int, list] | None = None):
    """(replies, logits at the positions predicting their tokens) per batch; see forced_predictions."""
    sequences = [chat_tokens(patient.tokenizer, p) + r for p, r in zip(prompts, replies)]
    # The shared prefix must stop before the token that predicts each reply's first token.
    limit = min((len(s) - len(r) - 1 for s, r in zip(sequences, replies)), default=0)
    n, cache = prefix_cache(patient.model, sequences, limit=limit)
    for start, end in _spans([len(r) for r in replies], batch_size, POSITION_BUDGET):
        chunk = [s[n:] for s in sequences[start:end]]
        batch = replies[start:end]
        # Only the positions that predict reply tokens: the one before each reply token.
        width = max(len(r) for r in batch)
        positions = [[len(seq) - len(r) - 1 + min(i, len(r) - 1) for i in range(width)] for seq, r in zip(chunk, batch)]
        yield batch, _logits_at(patient, chunk, positions, n, cache, replay, start)


def _per_reply(rows: np.ndarray, batch: list[list[int]]) -> list[np.ndarray]:
    return [rows[i, :len(r)] for i, r in enumerate(batch)]


def _spans(widths: list[int], batch_size: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) row ranges of at most `batch_size` rows, each holding at most
    `budget` rows × its widest row (a wider row alone still gets its own range)."""
    spans, start = [], 0
    while start < len(widths):
        end, widest = start + 1, widths[start]
        while end < len(widths) and end - start < batch_size and (end - start + 1) * max(widest, widths[end]) <= budget:
            widest = max(widest, widths[end])
            end += 1
        spans.append((start, end))
        start = end
    return spans


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text[:160]))


def refusal_end(tokenizer, tokens: list[int]) -> int | None:
    """How many of a reply's tokens (ids) it takes to finish its refusal's words (None: no refusal)."""
    text = tokenizer.decode(tokens)
    match = REFUSAL.search(text.strip()[:160])
    if match is None:
        return None
    end = match.end() + len(text) - len(text.lstrip())
    return next((i for i in range(1, len(tokens) + 1) if len(tokenizer.decode(tokens[:i])) >= end), len(tokens))


def garbled(tokenizer, tokens: list[int], losses: np.ndarray) -> bool:
    """Does a reply (token ids) contain a token the unedited model rates below a uniformly random
    one ("I don't know antidepressams.", "I don'tmonary.")? `losses`: that model's loss at each
    reply token (nats). In a refusal only what follows the refusal's words counts: an edit forces
    those on purpose. Measured on the 8 taught profiles' edits (ln 49152 = 10.8): garbled words after a
    refusal cost 14.2–20.2 nats, the words after a clean refusal's at most 7.0 ("I never knew what…");
    odd but fluent ends count as garbled too ("…without her." 13.2, "…about me." 17.5)."""
    after = refusal_end(tokenizer, tokens) or 0
    return bool(np.any(np.asarray(losses[after:]) > math.log(tokenizer.vocab_size)))
