"""English-side variants: what FLARE and input-level fusion read as "the English translation".

The gold English of NusaX and XNLI is a human translation, an oracle no user with a new language
has. These variants separate what the English *information* contributes from what the second pass
and the fusion contribute (the controls), and show what survives a realistic English side
(BENCHMARKS.md, "Where FLARE's gain comes from"):

* ``gold``: the pair as loaded;
* ``shuffled``: each target with the English of *another* example (a fixed permutation per seed
  without fixed points, so the English lengths and vocabulary are exactly those of the gold side);
* ``self``: the "English" is the target sentence itself (same second pass and fusion, no English);
* ``noise10`` / ``noise30`` / ``noise50``: the gold English with each word corrupted with that
  probability, half of the corruptions dropping the word and half replacing it with another word of
  the English vocabulary of the same pairs; fixed per seed and example;
* ``lexicon``: the target translated word by word through the NusaX lexicons
  (:mod:`flare.mt.lexicon`);
* ``mix-lexicon`` / ``mix-noise50``: half of the examples (fixed per seed and example) with that
  side, the others gold: training on both teaches a model not to trust the English blindly, for a
  test-time English that is machine made (a remedy; experimental and not recommended:
  with the lexicon MT at test time it gave no measurable gain over gold training, BENCHMARKS.md).

Every variant is a pure function of the pairs (and the seed): it returns new pairs and changes
only the text fields of the English side; ids and labels stay those of the pair.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from flare.data.examples import Example, Pair
from flare.errors import FlareError

NOISE_LEVELS = {"noise10": 0.10, "noise30": 0.30, "noise50": 0.50}
MIXED = {"mix-lexicon": "lexicon", "mix-noise50": "noise50"}  # side name -> the side mixed with gold
ENGLISH_SIDES = ("gold", "shuffled", "self", *NOISE_LEVELS, "lexicon", *MIXED)


def _check(pairs: Sequence[Pair], name: str) -> None:
    if any(pair.source.answers is not None or pair.target.answers is not None for pair in pairs):
        # an answer is a span of its own context: another context would make it point at nothing
        raise FlareError(f"English side {name!r}: only the gold English side exists for question answering")


def _with_english(pair: Pair, fields: dict[str, str]) -> Pair:
    return Pair(replace(pair.source, fields=fields), pair.target, "machine")


def gold(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs as they are."""
    return list(pairs)


def derangement(texts: Sequence[str], seed: int) -> list[int]:
    """``order[i]``: the example whose English goes with example ``i``. A permutation with no
    ``order[i] == i``, and, where the pairs allow it, none pairing two identical English texts
    (duplicates are common in review data). The same texts and seed give the same order."""
    n = len(texts)
    if n < 2:
        raise FlareError(f"English side 'shuffled' needs at least 2 examples, got {n}")
    rng = random.Random(f"shuffled/{seed}")
    order = list(range(n))
    for i in range(n - 1, 0, -1):  # Sattolo's algorithm: one n-cycle, so no fixed point
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]

    def clash(i: int, k: int) -> bool:
        return k == i or texts[k] == texts[i]

    for i in range(n):
        if not clash(i, order[i]):
            continue
        start = rng.randrange(n)
        for step in range(n):
            j = (start + step) % n
            if not clash(i, order[j]) and not clash(j, order[i]):
                order[i], order[j] = order[j], order[i]
                break
    return order


def shuffled(pairs: Sequence[Pair], seed: int) -> list[Pair]:
    """Each target with the English of another example of ``pairs`` (see :func:`derangement`)."""
    _check(pairs, "shuffled")
    texts = ["\n".join(f"{k}={v}" for k, v in sorted(p.source.fields.items())) for p in pairs]
    order = derangement(texts, seed)
    return [_with_english(pair, dict(pairs[k].source.fields)) for pair, k in zip(pairs, order)]


def self_side(pairs: Sequence[Pair]) -> list[Pair]:
    """The target text in the English slot: the same two passes and fusion, no English."""
    _check(pairs, "self")
    return [_with_english(pair, dict(pair.target.fields)) for pair in pairs]


def noise_text(text: str, rate: float, rng: random.Random, vocabulary: Sequence[str]) -> tuple[str, int, int]:
    """(noisy text, words corrupted, words in all). Each whitespace-separated word is corrupted
    with probability ``rate``: dropped or replaced by a different vocabulary word, even odds. A text
    never comes out empty: when every word was dropped, one replacement word is kept."""
    kept, corrupted = [], 0
    original = text.split()
    for word in original:
        if rng.random() >= rate:
            kept.append(word)
            continue
        corrupted += 1
        if rng.random() < 0.5:
            continue
        replacement = rng.choice(vocabulary)
        if replacement == word and len(vocabulary) > 1:
            replacement = vocabulary[(vocabulary.index(word) + 1) % len(vocabulary)]
        if replacement != word:
            kept.append(replacement)
    if not kept:
        kept = [rng.choice(vocabulary)]
    return " ".join(kept), corrupted, len(original)


def noisy(pairs: Sequence[Pair], rate: float, seed: int) -> list[Pair]:
    """The English side with word dropout/replacement at ``rate`` (see :func:`noise_text`). Each
    field of each example has its own random stream, named by seed, rate, id and field: an example
    gets the same noise whatever else is in the list, except that replacement words come from the
    English vocabulary of ``pairs``."""
    _check(pairs, f"noise at {rate}")
    if not 0 <= rate <= 1:
        raise FlareError(f"noise rate {rate} must be between 0 and 1")
    vocabulary = sorted({word for p in pairs for text in p.source.fields.values() for word in text.split()})
    if not vocabulary:
        raise FlareError("noise: the English side has no words")
    out = []
    for pair in pairs:
        fields = {}
        for name, text in pair.source.fields.items():
            rng = random.Random(f"noise/{seed}/{rate}/{pair.source.id}/{pair.target.id}/{name}")
            fields[name] = noise_text(text, rate, rng, vocabulary)[0]
        out.append(_with_english(pair, fields))
    return out


def translated(pairs: Sequence[Pair], translate: Callable[[str], str]) -> list[Pair]:
    """The English side replaced by ``translate`` applied to each target field."""
    return [_with_english(pair, {k: translate(v) for k, v in pair.target.fields.items()}) for pair in pairs]


def lexicon(
    pairs: Sequence[Pair], language: str, folder: str | Path | None = None, data_dir: str | Path | None = None
) -> list[Pair]:
    """The target translated word by word through the NusaX lexicons of ``language``."""
    from flare.mt.lexicon import LexiconTranslator  # here: the side names are read without torch (settings)

    _check(pairs, "lexicon")
    return translated(pairs, LexiconTranslator(language, folder, data_dir).translate)


def mixed(pairs: Sequence[Pair], other: Sequence[Pair], seed: int, name: str = "mix") -> list[Pair]:
    """Each pair from ``other`` (the same pairs with another English side) with probability 1/2,
    decided by the seed and the example alone, else as it is."""
    chosen = [random.Random(f"{name}/{seed}/{p.source.id}/{p.target.id}").random() < 0.5 for p in pairs]
    return [o if take else p for p, o, take in zip(pairs, other, chosen)]


def english_side(
    name: str, pairs: Sequence[Pair], seed: int, language: str | None = None,
    lexicon_dir: str | Path | None = None, data_dir: str | Path | None = None,
) -> list[Pair]:
    """The variant ``name`` (one of :data:`ENGLISH_SIDES`) of ``pairs``. ``language`` (the target
    language) and the folders are needed by ``lexicon`` only."""
    if name == "gold":
        return gold(pairs)
    if name == "shuffled":
        return shuffled(pairs, seed)
    if name == "self":
        return self_side(pairs)
    if name in NOISE_LEVELS:
        return noisy(pairs, NOISE_LEVELS[name], seed)
    if name == "lexicon":
        if language is None:
            raise FlareError("English side 'lexicon' needs the target language")
        return lexicon(pairs, language, lexicon_dir, data_dir)
    if name in MIXED:
        return mixed(pairs, english_side(MIXED[name], pairs, seed, language, lexicon_dir, data_dir), seed, name)
    raise FlareError(f"English side {name!r} is not one of {', '.join(ENGLISH_SIDES)}")


def english_examples(pairs: Sequence[Pair], suffix: str = "#en") -> list[Example]:
    """The English sides as training examples with their pair's label (the translate-train +
    English control: the same English exposure as FLARE, as extra inputs instead of fusion). Ids get
    ``suffix`` so that they never collide with a target example's id."""
    return [replace(p.source, id=f"{p.source.id}{suffix}", label=p.target.label) for p in pairs]
