"""English-side variants (issue 18 controls and the realistic English side) on real NusaX pairs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from flare.data.examples import Example, Pair
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.mt.english_side import (
    ENGLISH_SIDES,
    MIXED,
    NOISE_LEVELS,
    derangement,
    english_examples,
    english_side,
    noise_text,
    noisy,
    self_side,
    shuffled,
)
from flare.mt.lexicon import LexiconTranslator


@pytest.fixture(scope="module")
def pairs(data_dir) -> list[Pair]:
    return get_task("nusax").load_pairs("train", "jav", data_dir, source="gold")


def english(items: list[Pair]) -> list[str]:
    return [p.source.fields["text"] for p in items]


def _pair(i: int, en: str, target: str = "t") -> Pair:
    return Pair(Example(str(i), "eng", {"text": en}, 0), Example(str(i), "jav", {"text": f"{target}{i}"}, 0), "gold")


@pytest.mark.parametrize("name", ENGLISH_SIDES)
def test_every_variant_changes_only_the_english_text_and_leaves_the_input_alone(pairs, name, data_dir):
    before = [(p.source.fields.copy(), p.target.fields.copy()) for p in pairs]
    out = english_side(name, pairs, seed=1, language="jav", data_dir=data_dir)
    assert [(p.source.fields, p.target.fields) for p in pairs] == before  # pure
    assert len(out) == len(pairs)
    assert all(o.target == p.target for o, p in zip(out, pairs))
    assert all((o.source.id, o.source.label, o.source.language) == (p.source.id, p.source.label, p.source.language)
               for o, p in zip(out, pairs))
    assert all(o.source.fields["text"].strip() for o in out)
    changed = sum(a != b for a, b in zip(english(out), english(pairs)))
    assert changed == 0 if name == "gold" else changed > len(pairs) // (4 if name in MIXED else 2)


def test_shuffled_is_a_permutation_without_fixed_points(pairs):
    out = shuffled(pairs, seed=3)
    assert Counter(english(out)) == Counter(english(pairs))  # so the same length distribution
    assert sorted(len(t.split()) for t in english(out)) == sorted(len(t.split()) for t in english(pairs))
    assert all(o.source.fields != p.source.fields for o, p in zip(out, pairs))  # nobody keeps its own English
    assert english(shuffled(pairs, seed=3)) == english(out)
    assert english(shuffled(pairs, seed=4)) != english(out)


def test_derangement_avoids_identical_texts_where_it_can():
    texts = ["a", "a", "a", "b", "c", "d", "e", "f"]
    for seed in range(50):
        order = derangement(texts, seed)
        assert sorted(order) == list(range(len(texts)))
        assert all(order[i] != i and texts[order[i]] != texts[i] for i in range(len(texts)))
    order = derangement(["same", "same"], 0)  # no choice but identical texts: still another example
    assert order == [1, 0]
    with pytest.raises(FlareError, match="at least 2 examples"):
        shuffled([_pair(0, "x")], seed=1)


def test_self_puts_the_target_text_in_the_english_slot(pairs):
    out = self_side(pairs)
    assert all(o.source.fields == p.target.fields for o, p in zip(out, pairs))


@pytest.mark.parametrize("name", list(NOISE_LEVELS))
def test_noise_rate_is_the_requested_one(pairs, name):
    rate = NOISE_LEVELS[name]
    vocabulary = sorted({w for t in english(pairs) for w in t.split()})
    corrupted = total = 0
    for i, text in enumerate(english(pairs)):
        _, hit, words = noise_text(text, rate, random.Random(i), vocabulary)
        corrupted, total = corrupted + hit, total + words
    assert total > 5000 and abs(corrupted / total - rate) < 0.02
    # measured on the output alone: half of the corrupted words are dropped, half replaced
    out = noisy(pairs, rate, seed=1)
    kept = sum(len(t.split()) for t in english(out)) / sum(len(t.split()) for t in english(pairs))
    assert abs(kept - (1 - rate / 2)) < 0.03
    # replacements: words the sentence did not have (a few replacements happen to be in it already)
    new = sum((Counter(o.source.fields["text"].split()) - Counter(p.source.fields["text"].split())).total()
              for p, o in zip(pairs, out))
    total = sum(len(t.split()) for t in english(pairs))
    assert rate / 2 - 0.05 < new / total < rate / 2 + 0.01


def test_noise_is_fixed_per_seed_and_example(pairs):
    assert english(noisy(pairs, 0.3, seed=1)) == english(noisy(pairs, 0.3, seed=1))
    assert english(noisy(pairs, 0.3, seed=1)) != english(noisy(pairs, 0.3, seed=2))
    # the same example gets the same noise in another order (the stream is named by seed and id)
    backwards = noisy(pairs[::-1], 0.3, seed=1)
    assert english(backwards)[::-1] == english(noisy(pairs, 0.3, seed=1))


def test_noise_never_leaves_an_empty_text():
    out = noisy([_pair(0, "one"), _pair(1, "two words")], 1.0, seed=0)
    assert all(o.source.fields["text"].split() for o in out)
    with pytest.raises(FlareError, match="between 0 and 1"):
        noisy([_pair(0, "x")], 1.5, seed=0)


def test_lexicon_side_is_the_lexicon_translation_of_the_target(pairs, data_dir):
    out = english_side("lexicon", pairs[:40], seed=9, language="jav", data_dir=data_dir)
    translate = LexiconTranslator("jav", data_dir=data_dir).translate
    assert english(out) == [translate(p.target.fields["text"]) for p in pairs[:40]]
    assert all(o.kind == "machine" for o in out)


def test_bad_requests_are_refused(pairs):
    with pytest.raises(FlareError, match="is not one of gold, shuffled"):
        english_side("noise20", pairs, seed=1)
    with pytest.raises(FlareError, match="needs the target language"):
        english_side("lexicon", pairs, seed=1)
    qa = Pair(Example("q", "en", {"question": "q", "context": "abc"}, None, {"text": ["b"], "answer_start": [1]}),
              Example("q", "sw", {"question": "q", "context": "abc"}, None, {"text": ["b"], "answer_start": [1]}),
              "machine")
    with pytest.raises(FlareError, match="only the gold English side exists for question answering"):
        english_side("shuffled", [qa, qa], seed=1)
    assert english_side("gold", [qa], seed=1) == [qa]


def test_english_examples_carry_the_label_and_a_distinct_id(pairs):
    extra = english_examples(pairs[:10])
    assert [e.fields for e in extra] == [p.source.fields for p in pairs[:10]]
    assert [e.label for e in extra] == [p.target.label for p in pairs[:10]]
    assert not {e.id for e in extra} & {p.target.id for p in pairs}


@pytest.mark.parametrize("name", ["mix-lexicon", "mix-noise50"])
def test_mixed_sides_take_half_the_examples_from_the_other_side(pairs, name, data_dir):
    other_name = name.removeprefix("mix-")
    mixed = english_side(name, pairs, 1, "jav", data_dir=data_dir)
    other = english_side(other_name, pairs, 1, "jav", data_dir=data_dir)
    taken = [m.source.fields == o.source.fields != g.source.fields for m, o, g in zip(mixed, other, pairs)]
    kept = [m.source.fields == g.source.fields for m, g in zip(mixed, pairs)]
    assert all(t or k for t, k in zip(taken, kept))  # every example is gold or the other side
    assert 0.4 < sum(taken) / len(pairs) < 0.6
    assert english(english_side(name, pairs, 1, "jav", data_dir=data_dir)) == english(mixed)  # fixed per seed
    assert english(english_side(name, pairs, 2, "jav", data_dir=data_dir)) != english(mixed)
    if name == "mix-lexicon":  # (noise draws replacement words from the vocabulary of the pairs given)
        # an example's choice depends on itself and the seed, not on its batchmates
        assert english(english_side(name, pairs[:40], 1, "jav", data_dir=data_dir)) == english(mixed[:40])
