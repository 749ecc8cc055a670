"""Activation capture without hooks: wrap the layers we need, run only up to the last of them.

MLX has no forward hooks, so (like mlx-lm's GPTQ `Catcher`) we swap in small wrapper modules
that record what passes through, and stop the forward pass after the deepest layer needed.
Prompts of different lengths are right-padded into one batch: with a causal mask, padding after
the real tokens cannot change them. A prefix every prompt shares (the chat template's system
turn is ~3/4 of a short question) is run once and its KV cache reused by every batch.
"""

import itertools
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache

# While `reused_prefixes` is active: model state (its parameter arrays' ids) -> (those arrays,
# {prefix tokens: KV cache}).
_PREFIXES: ContextVar[dict | None] = ContextVar("edge_repair_prefixes", default=None)


class _Stop(Exception):
    pass


class _MLPTap(nn.Module):
    """Records the MLP input (after the pre-MLP norm) and output at one layer."""

    def __init__(self, mlp, record: dict, index: int):
        super().__init__()
        self.mlp, self._record, self._index = mlp, record, index

    def __call__(self, x):
        out = self.mlp(x)
        self._record.setdefault("mlp_in", {})[self._index] = x
        self._record.setdefault("mlp_out", {})[self._index] = out
        return out


class _BlockWrapper(nn.Module):
    """Stands in for a transformer block; unknown attributes are the block's."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def __getattr__(self, name):
        # Architectures read per-layer attributes (e.g. `use_sliding`) while looping over layers.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "block" not in self:
                raise
            return getattr(self["block"], name)


class _BlockTap(_BlockWrapper):
    """Records the residual stream after one transformer block; stops after the deepest."""

    def __init__(self, block, record: dict, index: int, last: bool):
        super().__init__(block)
        self._record, self._index, self._last = record, index, last

    def __call__(self, *args, **kwargs):
        h = self.block(*args, **kwargs)
        self._record.setdefault("resid", {})[self._index] = h
        if self._last:
            raise _Stop
        return h


@dataclass
class Activations:
    """Per layer: (n_tokens, d) arrays of the real (unpadded) tokens, prompts concatenated."""

    mlp_in: dict[int, mx.array]
    mlp_out: dict[int, mx.array]
    resid: dict[int, mx.array]
    lengths: list[int]

    def split(self, k: int) -> tuple["Activations", "Activations"]:
        """(the first k prompts' activations, the rest's)."""
        cut = sum(self.lengths[:k])
        parts = [{kind: {l: a[:cut] for l, a in per.items()} for kind, per in self._kinds().items()},
                 {kind: {l: a[cut:] for l, a in per.items()} for kind, per in self._kinds().items()}]
        return (Activations(**parts[0], lengths=self.lengths[:k]), Activations(**parts[1], lengths=self.lengths[k:]))

    def _kinds(self) -> dict:
        return {"mlp_in": self.mlp_in, "mlp_out": self.mlp_out, "resid": self.resid}

    def rows(self, prompt: int, positions: slice | list[int] | None = None) -> list[int]:
        """Row indices of prompt `prompt`'s tokens (all, or the given positions, negatives from the end)."""
        start = sum(self.lengths[:prompt])
        n = self.lengths[prompt]
        picked = range(n) if positions is None else (range(n)[positions] if isinstance(positions, slice) else [p % n for p in positions])
        return [start + p for p in picked]


def pad_batch(token_lists: list[list[int]], pad: int = 0) -> mx.array:
    width = max(len(t) for t in token_lists)
    return mx.array([t + [pad] * (width - len(t)) for t in token_lists])


def shared_prefix(token_lists: list[list[int]]) -> int:
    """Length of the prefix all lists share, leaving every list at least one token of its own."""
    shortest = min(len(t) for t in token_lists) - 1
    n = 0
    while n < shortest and all(t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return n


KINDS = ("mlp_in", "mlp_out", "resid")


def capture(model: nn.Module, token_lists: list[list[int]], layers: list[int], batch_size: int = 8,
            min_prefix: int = 8, kinds: tuple[str, ...] = KINDS, positions: list[int] | None = None) -> Activations:
    """MLP inputs/outputs and residuals at `layers` for every real token of every prompt.

    Only the `kinds` asked for are kept, and with `positions` (e.g. [-1]) only those positions of
    each prompt: every kept row is d floats per kind and layer, and an edit needs few of them.
    Prompts are batched by length (padding is compute: measured, 40 % of a batch of 64 questions)."""
    layers = sorted(set(layers))
    n_prefix = shared_prefix(token_lists) if len(token_lists) > 1 else 0
    own = min((len(t) for t in token_lists), default=0) - n_prefix
    if positions is not None and all(-own <= p < 0 for p in positions):
        # The prefix's own rows are not kept: its KV cache is all a batch needs (reused within an edit).
        n_prefix, shared = prefix_cache(model, token_lists, min_prefix)
        prefix_record = None
    elif n_prefix >= min_prefix and _plain_kv_cache(model):
        shared = make_prompt_cache(model)
        prefix_record = _run_tapped(model, mx.array([token_lists[0][:n_prefix]]), layers, shared)
    else:
        n_prefix, shared, prefix_record = 0, None, None
    kept = {kind: {l: [None] * len(token_lists) for l in layers} for kind in kinds}
    for batch in _by_length(token_lists, batch_size):
        chunk = [token_lists[i][n_prefix:] for i in batch]
        cache = repeat_cache(shared, len(chunk)) if shared else None
        record = _run_tapped(model, pad_batch(chunk), layers, cache)
        for kind, per in kept.items():
            for l in layers:
                full = record[kind][l]
                head = [prefix_record[kind][l][0]] if prefix_record else []
                for row, (i, t) in enumerate(zip(batch, chunk)):
                    per[l][i] = _kept(head, full[row, : len(t)], positions)
    merged = {kind: {l: mx.concatenate(v, axis=0).astype(mx.float32) for l, v in per.items()} for kind, per in kept.items()}
    for per in merged.values():
        mx.eval(list(per.values()))
    lengths = [len(t) for t in token_lists] if positions is None else [len(positions)] * len(token_lists)
    return Activations(merged.get("mlp_in", {}), merged.get("mlp_out", {}), merged.get("resid", {}), lengths)


def _by_length(token_lists: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of the lists in batches of similar length (longest first)."""
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _kept(head: list[mx.array], own: mx.array, positions: list[int] | None) -> mx.array:
    """One prompt's rows: the shared prefix's (if any) then its own, all or only at `positions`."""
    rows = mx.concatenate(head + [own]) if head else own
    if positions is None:
        return rows
    return rows[mx.array([p % rows.shape[0] for p in positions])]


def _plain_kv_cache(model: nn.Module) -> bool:
    return all(type(c) is KVCache for c in make_prompt_cache(model))


def prefix_cache(model: nn.Module, token_lists: list[list[int]], min_prefix: int = 8,
                 limit: int | None = None) -> tuple[int, list | None]:
    """(n, KV cache of the n ≤ limit tokens every list starts with), or (0, None) when not worth it."""
    n = shared_prefix(token_lists) if len(token_lists) > 1 else 0
    n = n if limit is None else min(n, limit)
    if n < min_prefix or not _plain_kv_cache(model):
        return 0, None
    memo, prefix = _PREFIXES.get(), token_lists[0][:n]
    return n, _run_prefix(model, prefix) if memo is None else _memoized_prefix(memo, model, prefix)


@contextmanager
def reused_prefixes(seed: dict | None = None):
    """Inside, prefix_cache reuses what it ran before for the same model state (the same parameter
    arrays): an edit's checks all start with the chat template's system turn, ~0.1 s per run on
    the default model, ~12 runs per edit. Callers only ever copy a prefix cache, never extend it.
    `seed` (from prefix_memo): prefixes run once per model, reused by every edit (not added to)."""
    token = _PREFIXES.set({state: (arrays, dict(known)) for state, (arrays, known) in (seed or {}).items()})
    try:
        yield
    finally:
        _PREFIXES.reset(token)


def prefix_memo(model: nn.Module, prefixes: list[list[int]]) -> dict:
    """A seed for reused_prefixes: the KV caches of `prefixes` for the model's current state."""
    with reused_prefixes():
        memo = _PREFIXES.get()
        for tokens in prefixes:
            _memoized_prefix(memo, model, tokens)
        return memo


def _memoized_prefix(memo: dict, model: nn.Module, tokens: list[int]) -> list:
    arrays = [a for _, a in tree_flatten(model.parameters())]
    _, known = memo.setdefault(tuple(id(a) for a in arrays), (arrays, {}))  # kept: their ids stay unique
    if tuple(tokens) not in known:
        # Causal attention: a cached run's first k positions are every sequence's that starts with
        # the same k tokens, so the longest such run is cut to k and only the rest is run.
        shared, cache = max(((_common(ran, tokens), c) for ran, c in known.items()), key=lambda x: x[0],
                            default=(0, None))
        cache = _cut(cache, shared) if shared else make_prompt_cache(model)
        if shared < len(tokens):
            model(mx.array([tokens[shared:]]), cache=cache)
            mx.eval([c.state for c in cache])
        known[tuple(tokens)] = cache
    return known[tuple(tokens)]


def _common(a: tuple, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _cut(cache: list, n: int) -> list:
    """A copy of a prompt cache holding only its first n positions."""
    out = []
    for c in cache:
        keys, values = c.keys_and_values()
        fresh = KVCache()
        fresh.state = (keys[..., :n, :], values[..., :n, :], n)
        out.append(fresh)
    return out


def _run_prefix(model: nn.Module, tokens: list[int]) -> list:
    cache = make_prompt_cache(model)
    model(mx.array([tokens]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def repeat_cache(cache: list, batch: int, step: int = 32) -> list:
    """The prefix's KV cache, repeated for a batch (layers the prefix run never reached stay empty).

    The copies, and the batch cache mlx-lm merges them into for generation, grow `step` positions
    at a time: mlx-lm's default of 256 gave every layer a 256-position buffer per batch row (and a
    copy of it when growing), most of an edit's peak memory for prompts of ~40 tokens."""
    out = []
    for c in cache:
        fresh = _SteppedKVCache(step)
        if c.keys is not None:
            keys, values = c.keys_and_values()
            fresh.state = (mx.repeat(keys, batch, axis=0), mx.repeat(values, batch, axis=0), c.offset)
        out.append(fresh)
    return out


class _SteppedKVCache(KVCache):
    """A KVCache whose growth step, unlike mlx-lm's class-wide 256, survives batch merging."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def merge(self, caches):  # mlx-lm merges prompt caches through the first one's `merge`
        merged = BatchKVCache.merge(caches)
        merged.step = self.step
        return merged


def _run_tapped(model: nn.Module, tokens: mx.array, layers: list[int], cache: list | None = None) -> dict:
    record: dict = {}
    with _tapped(model, layers, record, stop=True):
        try:
            model(tokens, cache=cache)
        except _Stop:
            pass
    mx.eval(record)
    return record


@contextmanager
def _tapped(model: nn.Module, layers: list[int], record: dict, stop: bool):
    """Inside, `layers` record into `record` (see _MLPTap, _BlockTap); with `stop`, the forward
    pass ends after the deepest of them."""
    blocks = model.layers
    originals = {l: blocks[l] for l in layers}
    try:
        for l in layers:
            original = originals[l]
            original.mlp = _MLPTap(original.mlp, record, l)
            blocks[l] = _BlockTap(original, record, l, last=stop and l == layers[-1])
        yield
    finally:
        for l, original in originals.items():
            blocks[l] = original
            if isinstance(original.mlp, _MLPTap):
                original.mlp = original.mlp.mlp


class _Replay(_BlockWrapper):
    """A block below the replayed layer: returns the stored residual (or passes its input on)."""

    def __init__(self, block, hidden: mx.array | None):
        super().__init__(block)
        self._hidden = hidden

    def __call__(self, x, *args, **kwargs):
        return x if self._hidden is None else self._hidden.astype(x.dtype)


def residuals(model: nn.Module, token_lists: list[list[int]], layer: int, batch_size: int = 8) -> list[mx.array]:
    """Per token list: the residual stream entering block `layer` (layer ≥ 1) at every token."""
    acts = capture(model, token_lists, [layer - 1], batch_size=batch_size, kinds=("resid",))
    bounds = [0] + list(itertools.accumulate(acts.lengths))
    return [acts.resid[layer - 1][a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def replayed_logits(model: nn.Module, layer: int, hidden: list[mx.array], cache: list | None = None) -> mx.array:
    """Logits of right-padded sequences from their residuals entering block `layer`: the blocks
    below are not run again. Exact as long as nothing below `layer` differs from when the
    residuals were captured (edits confined to the upper layers). With `cache` (a shared prefix's
    KV cache, repeated per row, see prefix_cache), `hidden` holds only the tokens after the prefix."""
    with _replaying(model, layer, hidden) as tokens:
        return model(tokens, cache=cache)


@dataclass
class LastTokens:
    """What one pass over a batch of token lists gives at each list's last token (see last_tokens)."""

    inputs: dict[int, mx.array]   # layer -> (n_lists, d) MLP inputs at the last token
    predicted: list[int]          # the greedy next token after each list
    hidden: list[mx.array]        # per list: the residual entering the replay layer, tokens after the prefix
    skipped: int                  # the shared prefix's length (the tokens `hidden` leaves out)


def last_tokens(model: nn.Module, token_lists: list[list[int]], layers: list[int], replay_from: int = 0,
                batch_size: int = 32) -> LastTokens:
    """Per layer of `layers` the MLP input at each list's last token and the greedy next token
    there, one pass per batch after the shared prefix's KV cache (the output head only at the
    last tokens). With `replay_from` ≥ 1, also the residual entering that block at every token
    after the prefix: later passes of the same lists can start there (replay=(replay_from,
    hidden, skipped) in verify.first_tokens) while nothing below it changes."""
    n, cache = prefix_cache(model, token_lists)
    taps = sorted(set(layers) | ({replay_from - 1} if replay_from else set()))
    rows, predicted = {l: [None] * len(token_lists) for l in layers}, [0] * len(token_lists)
    hidden = [None] * len(token_lists) if replay_from else []
    for batch in _by_length(token_lists, batch_size):
        chunk = [token_lists[i][n:] for i in batch]
        last = mx.array([len(t) - 1 for t in chunk])
        record: dict = {}
        with _tapped(model, taps, record, stop=False), logits_only_at(model, last[:, None]):
            logits = model(pad_batch(chunk), cache=repeat_cache(cache, len(chunk)) if cache else None)
        at_last = {l: record["mlp_in"][l][mx.arange(len(chunk)), last].astype(mx.float32) for l in layers}
        tokens = mx.argmax(logits[:, 0], axis=-1)
        mx.eval(at_last, tokens, record["resid"][replay_from - 1] if replay_from else [])
        for row, (i, t, token) in enumerate(zip(batch, chunk, tokens.tolist())):
            predicted[i] = token
            for l in layers:
                rows[l][i] = at_last[l][row]
            if replay_from:
                hidden[i] = record["resid"][replay_from - 1][row, : len(t)]
    return LastTokens({l: mx.stack(r) for l, r in rows.items()}, predicted, hidden, n)


@contextmanager
def _replaying(model: nn.Module, layer: int, hidden: list[mx.array]):
    """Inside, the blocks below `layer` hand on the right-padded `hidden` instead of computing it;
    yields the (ignored) token ids to call the model with."""
    width = max(len(h) for h in hidden)
    batch = mx.stack([mx.pad(h, [(0, width - len(h)), (0, 0)]) for h in hidden])
    blocks = model.layers
    originals = blocks[:layer]
    try:
        for i in range(layer):
            blocks[i] = _Replay(originals[i], batch if i == layer - 1 else None)
        yield mx.zeros(batch.shape[:2], mx.int32)
    finally:
        for i in range(layer):
            blocks[i] = originals[i]


class _Gather(_BlockWrapper):
    """The last block, keeping only some positions per row: the final norm and the output head
    (49k×576 on the default model, as costly as a third of the blocks) then run on those alone."""

    def __init__(self, block, positions: mx.array):
        super().__init__(block)
        self._positions = positions

    def __call__(self, *args, **kwargs):
        return mx.take_along_axis(self.block(*args, **kwargs), self._positions[..., None], axis=1)


@contextmanager
def logits_only_at(model: nn.Module, positions: mx.array):
    """Inside, the model's logits are computed only at `positions` (batch, k) of each row."""
    blocks = model.layers
    last = blocks[-1]
    blocks[-1] = _Gather(last, positions)
    try:
        yield model
    finally:
        blocks[-1] = last
