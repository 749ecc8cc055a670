"""The retain buffer: prompts whose answers an edit must keep, sealed with AES-GCM in `retain.bin`.

Two sources: generic prompts shipped in `edge_repair/data/retain_prompts.json`, and, only with the
owner's consent, about a tenth (RePAIR's <=10% retain ratio) of their own recent chat prompts.
Those are private, so the file is encrypted; after a forget, `scrub` drops every sample that
mentions what was forgotten, so the buffer never keeps a copy of it.
"""

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_repair.errors import StateError
from edge_repair.paths import home_dir
from edge_repair.storage.keys import load_key
from edge_repair.storage.lock import home_lock
from edge_repair.storage.sealed import read_sealed, write_sealed

RETAIN_FILE = "retain.bin"
LABEL = "retain-buffer"
RATIO = 0.1
MAX_TURNS = 512


def shipped_prompts() -> list[str]:
    try:
        text = resources.files("edge_repair").joinpath("data/retain_prompts.json").read_text()
    except (FileNotFoundError, OSError):
        return []
    prompts = json.loads(text)
    return [p for p in prompts if isinstance(p, str) and p.strip()]


def _digest(prompt: str) -> str:
    # Shipped prompts are hidden by digest, so an updated prompt list cannot shift what is hidden.
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def mentions(sample: str, needles: list[str]) -> bool:
    """Does the sample contain a term (as whole words), or is it a piece of one (a shortened prompt)?"""
    padded = f" {_normal(sample)} "
    return any(f" {n} " in padded or (padded.strip() and padded in f" {n} ") for n in needles)


@dataclass
class RetainBuffer:
    home: Path
    shipped: list[str]
    turns: list[str] = field(default_factory=list)   # the owner's prompts, kept with consent
    hidden: list[str] = field(default_factory=list)  # digests of shipped prompts that mention something forgotten

    @classmethod
    def open(cls, home: Path | None = None, shipped: list[str] | None = None) -> "RetainBuffer":
        buffer = cls(Path(home) if home else home_dir(), shipped_prompts() if shipped is None else list(shipped))
        buffer._load()
        return buffer

    def prompts(self, k: int | None = None, seed: int = 0) -> list[str]:
        """Up to k retain prompts, sampled reproducibly; all of them when k is None."""
        hidden = set(self.hidden)
        pool = [p for p in self.shipped if _digest(p) not in hidden] + self.turns
        if k is None or k >= len(pool):
            return pool
        return random.Random(seed).sample(pool, k)

    def add_turns(self, turns: list, consent: bool = False, ratio: float = RATIO) -> int:
        """Keep about `ratio` of the owner's prompts (messages or strings); nothing without consent."""
        if not consent:
            return 0
        texts = [t.get("content", "") if isinstance(t, dict) and t.get("role") == "user" else t
                 for t in turns if isinstance(t, str) or (isinstance(t, dict) and t.get("role") == "user")]
        texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            return 0
        chosen = random.sample(texts, max(1, math.floor(len(texts) * ratio)))
        with home_lock(self.home, name="retain"):
            self._load()
            self.turns = (self.turns + [t for t in chosen if t not in self.turns])[-MAX_TURNS:]
            self._save()
        return len(chosen)

    def scrub(self, terms: list[str]) -> int:
        """Drop every sample mentioning any term (forgotten prompt, response, subject); returns how many."""
        needles = [n for n in (_normal(t) for t in terms if t) if n]
        if not needles:
            return 0
        with home_lock(self.home, name="retain"):
            self._load()
            kept = [t for t in self.turns if not mentions(t, needles)]
            newly_hidden = [_digest(p) for p in self.shipped if _digest(p) not in self.hidden and mentions(p, needles)]
            removed = len(self.turns) - len(kept) + len(newly_hidden)
            self.turns, self.hidden = kept, sorted(self.hidden + newly_hidden)
            self._save()  # always rewritten: a fresh nonce and file, whether or not anything matched
        return removed

    def __len__(self) -> int:
        return len(self.prompts())

    def _load(self) -> None:
        path = self.home / RETAIN_FILE
        if not path.exists():
            self.turns, self.hidden = [], []
            return
        data = read_sealed(path, load_key(self.home), LABEL)
        if not isinstance(data, dict) or not isinstance(data.get("turns"), list) or not isinstance(data.get("hidden"), list):
            raise StateError(f"{path} decrypts but is not a retain buffer")
        self.turns, self.hidden = [str(t) for t in data["turns"]], [str(h) for h in data["hidden"]]

    def _save(self) -> None:
        write_sealed(self.home / RETAIN_FILE, load_key(self.home), {"turns": self.turns, "hidden": self.hidden}, LABEL)
