"""The math of `flare analyze` (flare/hf/alignment.py): hand-computed values on constructed vectors,
and the properties any cosine/retrieval measure must keep."""

import math

import pytest
import torch

from flare.hf.alignment import layer_alignment, mean_pool, paired_cosine, retrieval_accuracy


def test_mean_pool_averages_only_the_real_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[-5.0, 5.0], [7.0, 9.0], [1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # right padding in row 0, left padding in row 1
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [4.0, 5.0]]
    with pytest.raises(ValueError, match="no real token"):
        mean_pool(hidden, torch.tensor([[1, 0, 0], [0, 0, 0]]))


def test_three_sentences_by_hand():
    # target t0=(1,0) t1=(0,1) t2=(1,1); English e0=(1,0) e1=(1,1) e2=(0,1)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    english = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # own-pair cosines: 1, 1/sqrt(2), 1/sqrt(2)
    assert paired_cosine(target, english) == pytest.approx((1 + math.sqrt(2)) / 3)
    # t0 -> e0 (right), t1 -> e2 (wrong), t2 -> e1 (wrong); e0 -> t0 (right), e1 -> t2, e2 -> t1 (wrong)
    assert retrieval_accuracy(target, english) == pytest.approx((1 / 3, 1 / 3))


def test_the_two_directions_can_differ():
    # t0=(1,0), t1=(0,1); e0=(1,0), e1=(1,0.1): each target finds its own translation, but e1 is
    # closer to t0 (0.995) than to t1 (0.0995), so English->target gets one of two
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    english = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    assert retrieval_accuracy(target, english) == (1.0, 0.5)
    assert paired_cosine(target, english) == pytest.approx((1 + 0.1 / math.sqrt(1.01)) / 2)


def test_identical_vectors_retrieve_only_the_first_row():
    same = torch.ones(4, 3)
    assert retrieval_accuracy(same, same) == (0.25, 0.25)  # ties go to the lowest index, never "all right"
    assert paired_cosine(same, same) == pytest.approx(1.0)


def test_properties_on_random_sets():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        n, d = int(torch.randint(2, 12, (1,), generator=generator)), int(torch.randint(2, 9, (1,), generator=generator))
        target, english = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
        cosine, retrieval = paired_cosine(target, english), retrieval_accuracy(target, english)
        assert -1 - 1e-6 <= cosine <= 1 + 1e-6 and all(0 <= r <= 1 for r in retrieval)
        # positive rescaling of any vector changes nothing; permuting the pairs together changes nothing
        scale = torch.rand(n, 1, generator=generator) * 10 + 0.1
        assert paired_cosine(target * scale, english) == pytest.approx(cosine, abs=1e-5)
        assert retrieval_accuracy(target * scale, english) == retrieval
        order = torch.randperm(n, generator=generator)
        assert retrieval_accuracy(target[order], english[order]) == retrieval
        # the two directions swap when the sides swap
        assert retrieval_accuracy(english, target) == retrieval[::-1]
        # a set against itself: cosine 1, every distinct vector retrieves itself
        assert paired_cosine(target, target) == pytest.approx(1.0, abs=1e-5)
        assert retrieval_accuracy(target, target) == (1.0, 1.0)


def test_layer_alignment_has_one_row_per_layer():
    target = [torch.eye(3), torch.eye(3)]
    english = [torch.eye(3), torch.eye(3).flip(0)]
    rows = layer_alignment(target, english)
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[0] == {"layer": 0, "cosine": pytest.approx(1.0), "retrieval_to_english": 1.0,
                       "retrieval_to_target": 1.0}
    # layer 1: e = reversed identity; only the middle sentence is its own translation
    assert rows[1]["retrieval_to_english"] == pytest.approx(1 / 3) and rows[1]["cosine"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        layer_alignment([torch.eye(3)], [torch.eye(3), torch.eye(3)])
