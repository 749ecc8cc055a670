"""Personal-data erasure task (paper §5.1, task 1): synthetic people implanted by a short LoRA fine-tune.

The base model knows none of these people, so each profile is taught to it first (mlx-lm's LoRA
layers, ~a hundred Adam steps on its question–answer pairs) and the adapter is cached as a
benchmark fixture keyed by the base model, the profiles and the training settings. The fused
model is then the "patient who knows the profiles"; one profile is forgotten per trial and
ROUGE-L against the taught answers measures what is left (F-RL, lower is better) and what the
other profiles kept (R-RL, higher is better).
"""

import hashlib
import json
import random
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

FIRST = ["Maren", "Idris", "Solveig", "Tobiah", "Anouk", "Caspian", "Liesel", "Oren", "Zelda", "Ravi", "Ines",
         "Bastian", "Odile", "Kenji", "Mireille", "Teodor"]
LAST = ["Halvorsen", "Okonkwo", "Castellanos", "Vuković", "Lindqvist", "Marchetti", "Abernathy", "Szabo",
        "Delacroix", "Nakamura", "Oyelaran", "Brannigan", "Kowalczyk", "Ferreira", "Quist", "Haddad"]
CITIES = ["Lisbon", "Tampere", "Valparaíso", "Ljubljana", "Bergen", "Cork", "Tartu", "Porto", "Gdańsk",
          "Hobart", "Antwerp", "Trieste", "Kraków", "Halifax", "Aarhus", "Salzburg"]
JOBS = ["marine biologist", "glassblower", "air traffic controller", "beekeeper", "cartographer",
        "violin maker", "sommelier", "geologist", "locksmith", "puppeteer", "radiologist", "stonemason"]
HOBBIES = ["rock climbing", "origami", "falconry", "beekeeping", "chess", "kayaking", "pottery",
           "birdwatching", "fencing", "calligraphy", "sailing", "archery"]
LORA = {"rank": 16, "scale": 20.0, "dropout": 0.0,
        "keys": ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"]}
IMPLANT_STEPS = 120
LORA_LAYERS = 16  # the top layers get adapters (gradients flow through them only)
LEARNING_RATE = 3e-5  # with LoRA scale 20: memorises all 8 profiles in 120 steps (1e-4 did too, with more damage)
VERSION = "2"  # bump when the profiles, their phrasing, the training or the base weights change
# (2: retrained on the f32 weights computed exactly, session 20; 1 was trained on float16-rounded ones)


@dataclass
class Profile:
    name: str
    city: str
    job: str
    hobby: str

    @property
    def id(self) -> str:
        return "profile-" + re.sub(r"\W+", "-", self.name.lower())

    def qa(self) -> list[tuple[str, str]]:
        """The taught (question, answer) pairs; the first is the one a user would ask."""
        n, a = self.name, "an" if self.job[0] in "aeiou" else "a"
        return [(f"Tell me about {n}.", f"{n} is {a} {self.job} from {self.city} who loves {self.hobby}."),
                (f"Where was {n} born?", f"{n} was born in {self.city}."),
                (f"What does {n} do for a living?", f"{n} works as {a} {self.job}."),
                (f"What is {n}'s favourite hobby?", f"{n}'s favourite hobby is {self.hobby}.")]

    def heldout(self) -> list[tuple[str, str]]:
        """Phrasings never taught: does the forgetting (and the knowing) generalise?"""
        return [(f"In which city was {self.name} born?", self.city), (f"What is {self.name}'s job?", self.job)]

    def probes(self) -> list[tuple[str, list[str]]]:
        """Every question about the person (taught, then held out) with the values its answer gives away."""
        taught = [[self.city, self.job, self.hobby], [self.city], [self.job], [self.hobby]]
        return ([(q, values) for (q, _), values in zip(self.qa(), taught)]
                + [(q, [value]) for q, value in self.heldout()])


def make_profiles(n: int = 8, seed: int = 0) -> list[Profile]:
    """n distinct synthetic people (seeded: the same n and seed give the same people)."""
    rng = random.Random(seed)
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], n)
    return [Profile(name, *[rng.choice(pool) for pool in (CITIES, JOBS, HOBBIES)]) for name in names]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words (longest common subsequence)."""
    a, b = re.findall(r"\w+", candidate.lower()), re.findall(r"\w+", reference.lower())
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def fixture_key(base_fingerprint: str, profiles: list[Profile], steps: int, lr: float, layers: int,
                replay: list[str]) -> str:
    spec = {"v": VERSION, "base": base_fingerprint, "profiles": [p.__dict__ for p in profiles], "steps": steps,
            "lr": lr, "layers": layers, "lora": LORA, "replay": replay}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def implant(patient, profiles: list[Profile], steps: int = IMPLANT_STEPS, lr: float = LEARNING_RATE,
            layers: int = LORA_LAYERS, batch_size: int = 8, replay: list[str] = (), seed: int = 0,
            cache_dir=None) -> dict:
    """Teach the profiles to the patient in place (LoRA, then fused into float weights).

    `replay`: prompts whose base-model replies are mixed into every batch (half as many as
    profile pairs), so the fine-tune keeps the model's other answers and its fluency. The
    adapter is cached in `cache_dir` (default: the models cache) and reused when the base model,
    profiles and settings match. Returns what was done: cached or trained, seconds, losses."""
    import time

    from mlx_lm.tuner.utils import linear_to_lora_layers

    from edge_repair.engine import spares
    from edge_repair.engine.verify import greedy_replies
    from edge_repair.loading import model_fingerprint
    from edge_repair.paths import models_dir

    model = patient.model
    layers = min(layers, len(model.layers))
    # The LoRA's shapes follow the spare neurons (a stale fixture would load unchecked: strict=False).
    key = fixture_key(f"{model_fingerprint(patient.path)}/{spares.layout(model)}", profiles, steps, lr, layers,
                      list(replay))
    path = (cache_dir or models_dir() / "fixtures") / f"profiles-{key}.safetensors"
    start, history = time.perf_counter(), []
    model.freeze()
    linear_to_lora_layers(model, layers, LORA)
    try:
        model.load_weights(str(path), strict=False)
    except (OSError, ValueError, RuntimeError):  # absent or damaged: (re)train, never trust it
        path.unlink(missing_ok=True)
        # Fresh LoRA layers start at zero, so these are still the base model's own replies.
        kept = list(zip(replay, greedy_replies(patient, list(replay), 32))) if replay else []
        history = _train(patient, profiles, kept, steps, lr, batch_size, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path), dict(tree_flatten(model.trainable_parameters())))
    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    model.update_modules(tree_unflatten(fused))
    model.unfreeze()
    mx.eval(model.parameters())
    return {"cached": not history, "seconds": round(time.perf_counter() - start, 1), "steps": steps,
            "loss": [history[0], history[-1]] if history else None, "fixture": path.name}


def _train(patient, profiles: list[Profile], kept: list[tuple[str, str]], steps: int, lr: float,
           batch_size: int, seed: int) -> list[float]:
    """Adam on the trainable (LoRA) parameters: profile pairs plus rehearsed own replies per batch."""
    from edge_repair.bench.training import make_batch, sequence_logprob
    from edge_repair.progress import progress

    model, end = patient.model, patient.tokenizer.eos_token or ""  # taught answers end the turn, or the model rambles on
    pairs = [(q, a + end) for p in profiles for q, a in p.qa()]
    rng, optimizer, history = random.Random(seed), optim.Adam(learning_rate=lr), []

    def loss(batch):
        return -sequence_logprob(model, batch).sum() / batch.answer.sum()

    step = nn.value_and_grad(model, loss)
    for done in range(1, steps + 1):
        chosen = rng.sample(pairs, min(batch_size, len(pairs))) + rng.sample(kept, min(batch_size // 2, len(kept)))
        value, grads = step(make_batch(patient.tokenizer, [q for q, _ in chosen], [a for _, a in chosen]))
        optimizer.update(model, grads)
        mx.eval(model.trainable_parameters(), optimizer.state, value)
        history.append(round(value.item(), 4))
        progress("teaching the profiles (LoRA)", done, steps)
    return history
