"""Where does the taught model read a person's attributes from? A causal trace (README, Session 24).

For each taught person and attribute, the prompt "What does X do for a living?" + the reply's
start "X works as a" is run twice: with the person's name, and with an untaught name of as many
tokens. The true run's residual at one layer and one set of positions (the prompt's name tokens,
the reply's, both, the last position) is replaced by the untaught run's; the script prints the
probability of the answer's first token. Loads the cached personal fixture (or fine-tunes it).

    python scripts/trace_subject.py --people 4
"""

import argparse

import edge_repair  # noqa: F401 - loads OpenBLAS before mlx
import mlx.core as mx

from edge_repair import datasets
from edge_repair.bench import baselines
from edge_repair.bench.profiles import FIRST, IMPLANT_STEPS, LAST, implant, make_profiles
from edge_repair.engine.capture import _BlockWrapper, capture
from edge_repair.loading import load_patient

QUESTIONS = {"job": ("What does {} do for a living?", "{} works as a"),
             "hobby": ("What is {}'s favourite hobby?", "{}'s favourite hobby is"),
             "city": ("Where was {} born?", "{} was born in")}
REPLY_TOKENS = 8  # name positions this close to the end belong to the reply's start


class _Replaced(_BlockWrapper):
    """A block whose output at `positions` is replaced by `value`."""

    def __init__(self, block, positions: mx.array, value: mx.array):
        super().__init__(block)
        self.positions, self.value = positions, value

    def __call__(self, x, *args, **kwargs):
        out = self.block(x, *args, **kwargs)
        out[:, self.positions, :] = self.value
        return out


def tokens(tokenizer, name: str, kind: str) -> list[int]:
    question, reply = QUESTIONS[kind]
    text = tokenizer.apply_chat_template([{"role": "user", "content": question.format(name)}], tokenize=False,
                                         add_generation_prompt=True) + reply.format(name)
    return list(tokenizer.encode(text, add_special_tokens=False))


def next_token_probs(model, ids: list[int], wrappers: dict) -> mx.array:
    """The next token's distribution with blocks temporarily wrapped (layer -> wrapper factory)."""
    originals = {l: model.layers[l] for l in wrappers}
    try:
        for l, wrap in wrappers.items():
            model.layers[l] = wrap(originals[l])
        return mx.softmax(model(mx.array([ids]))[0, -1].astype(mx.float32))
    finally:
        for l, block in originals.items():
            model.layers[l] = block


def stand_in(tokenizer, true: list[int], kind: str, taken: set[str]) -> list[int] | None:
    """An untaught name's tokens, as long as the true run's (so positions line up)."""
    for first in FIRST:
        for last in LAST:
            other = tokens(tokenizer, f"{first} {last}", kind)
            if f"{first} {last}" not in taken and len(other) == len(true) and other != true:
                return other
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--every", type=int, default=3, help="trace every n-th layer")
    args = parser.parse_args()
    patient = load_patient(None)
    tok, model = patient.tokenizer, patient.model
    profiles = make_profiles(baselines.PROFILES)
    implant(patient, profiles, steps=IMPLANT_STEPS, replay=datasets.retain_prompts()[:baselines.REPLAY])
    taken = {p.name for p in profiles}
    print("positions replaced: prompt's name / reply's name / both / last position")
    for profile in profiles[: args.people]:
        for kind, answer in (("job", profile.job), ("hobby", profile.hobby), ("city", profile.city)):
            true = tokens(tok, profile.name, kind)
            other = stand_in(tok, true, kind, taken)
            if other is None:
                continue
            target = tok.encode(" " + answer, add_special_tokens=False)[0]
            changed = [i for i, (a, b) in enumerate(zip(true, other)) if a != b]
            in_reply = [i for i in changed if i >= len(true) - REPLY_TOKENS]
            sets = [[i for i in changed if i not in in_reply], in_reply, changed, [len(true) - 1]]
            layers = list(range(0, len(model.layers), args.every))
            kept = capture(model, [other], layers, kinds=("resid",)).resid  # (tokens, d) per layer
            untaught = next_token_probs(model, other, {})
            line = (f"{profile.name:18s} {kind:5s} true {float(next_token_probs(model, true, {})[target]):.2f} "
                    f"untaught {float(untaught[target]):.2f} |")
            for layer in layers:
                cells = []
                for positions in sets:
                    if not positions:
                        cells.append("-")
                        continue
                    index = mx.array(positions)
                    value = kept[layer][index][None]
                    probs = next_token_probs(model, true, {layer: lambda b: _Replaced(b, index, value)})
                    cells.append(f"{float(probs[target]):.2f}")
                line += f" L{layer}:" + "/".join(cells)
            print(line, flush=True)


if __name__ == "__main__":
    main()
