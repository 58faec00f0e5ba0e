"""How a joint adapter's epochs mix its languages (docs/studies.md, "One adapter for many languages").

Each language l with n_l training examples gets a share p_l of an epoch: proportional (p_l = n_l / sum n)
or temperature-based (p_l proportional to n_l^(1/T), as multilingual MT up-samples small languages).
An epoch of `size` examples takes round(size * p_l) examples of language l, rounded by largest
remainders so that the counts add up to `size` exactly. Within a language the examples come from a
random permutation, cycled when the language is up-sampled, so no example repeats before every
other example of its language has been drawn. The permutations come from (seed, epoch, language):
the same seed gives the same epochs, so a resumed run sees the data an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flare.errors import FlareError

Sampling = Literal["proportional", "temperature"]


def language_shares(sizes: Mapping[str, int], sampling: Sampling, temperature: float = 5.0) -> dict[str, float]:
    """p_l per language (they sum to 1)."""
    if not sizes or any(n <= 0 for n in sizes.values()):
        empty = [language for language, n in sizes.items() if n <= 0]
        raise FlareError(f"joint training: no training examples for {', '.join(empty) or 'any language'}")
    exponent = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {language: n ** exponent for language, n in sizes.items()}
    total = math.fsum(weights.values())
    return {language: weight / total for language, weight in weights.items()}


def epoch_counts(shares: Mapping[str, float], size: int) -> dict[str, int]:
    """round(size * p_l) per language by largest remainders: the counts add up to `size` exactly
    (ties broken by the languages' order, so the result never depends on dict hashing)."""
    exact = {language: size * share for language, share in shares.items()}
    counts = {language: math.floor(value) for language, value in exact.items()}
    left = size - sum(counts.values())
    order = sorted(exact, key=lambda language: (-(exact[language] - counts[language]), list(exact).index(language)))
    for language in order[:left]:
        counts[language] += 1
    return counts


def _rng(seed: int, epoch: int, language: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{epoch}/{language}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class LanguageMix:
    """The training items of a joint adapter: `pools` maps each language to its items; `len()` is
    the epoch size and `epoch(e)` the items of epoch e (in language blocks: the training loop
    shuffles them)."""

    pools: Mapping[str, Sequence[Any]]
    sampling: Sampling
    temperature: float
    size: int
    seed: int

    @classmethod
    def build(cls, pools: Mapping[str, Sequence[Any]], sampling: Sampling, temperature: float, epoch_size: int,
              seed: int) -> LanguageMix:
        """epoch_size 0: the number of items of all languages together."""
        language_shares({language: len(items) for language, items in pools.items()}, sampling, temperature)
        return cls(dict(pools), sampling, temperature, epoch_size or sum(len(i) for i in pools.values()), seed)

    @property
    def shares(self) -> dict[str, float]:
        return language_shares({language: len(items) for language, items in self.pools.items()}, self.sampling,
                               self.temperature)

    @property
    def counts(self) -> dict[str, int]:
        """Examples of each language in every epoch."""
        return epoch_counts(self.shares, self.size)

    def __len__(self) -> int:
        return self.size

    def epoch(self, epoch: int) -> list[Any]:
        items: list[Any] = []
        for language, count in self.counts.items():
            pool = self.pools[language]
            rng = _rng(self.seed, epoch, language)
            drawn: list[Any] = []
            while len(drawn) < count:  # cycle through fresh permutations when up-sampled
                order = list(range(len(pool)))
                rng.shuffle(order)
                drawn += [pool[i] for i in order[: count - len(drawn)]]
            items += drawn
        return items
