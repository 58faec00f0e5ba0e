"""X-Mixup's pieces (flare/hf/xmixup.py): the gate, the entropy, the sampling schedule, batch and
padding independence, save/load, and what it refuses."""

from __future__ import annotations

import math

import pytest
import torch

import tiny_models
from flare.adapter import FlareConfig, get_flare_model, load_flare_model
from flare.errors import FlareError
from flare.hf.xmixup import (
    LAMBDA_MAX,
    XMixupModel,
    check_mixing,
    cross_entropy_pair,
    gate_lambda,
    gold_probability,
    uses_gold,
)


def _mixup(seed: int = 0, layer: int = 1) -> XMixupModel:
    model = get_flare_model(tiny_models.xlmr_classifier(seed), FlareConfig(task_type="SEQ_CLS",
                                                                           modules_to_save=["classifier"]))
    tiny_models.randomize_lora_B(model)
    mixup = XMixupModel(model, layer, seed=seed)
    with torch.no_grad():
        mixup.gate.copy_(torch.tensor([0.7, -0.3]))
    return mixup.eval()


def _rows(generator: torch.Generator, count: int, lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((count, pad_to), tiny_models.PAD)
    mask = torch.zeros(count, pad_to, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, :length] = torch.randint(3, tiny_models.VOCAB, (length,), generator=generator)
        mask[i, :length] = 1
    return ids, mask


def _entropy_by_hand(scores, target_mask, english_mask) -> list[float]:
    """Loops over plain floats: per example, each direction's mean entropy over heads and real queries."""
    def direction(rows, queries, keys):
        values = []
        for head in rows:
            for q, row in enumerate(head):
                if not queries[q]:
                    continue
                real = [s for s, k in zip(row, keys) if k]
                total = sum(math.exp(s) for s in real)
                values.append(-sum(math.exp(s) / total * math.log(math.exp(s) / total) for s in real))
        return sum(values) / len(values)

    out = []
    for b, example in enumerate(scores.tolist()):
        transposed = [[list(column) for column in zip(*head)] for head in example]
        out.append(direction(example, target_mask[b].tolist(), english_mask[b].tolist())
                   + direction(transposed, english_mask[b].tolist(), target_mask[b].tolist()))
    return out


def test_the_entropy_equals_a_hand_computation_on_a_padded_case():
    # uniform scores: ln(real English keys) + ln(real target keys), whatever the padding holds
    zeros = torch.zeros(1, 2, 3, 4)
    value = cross_entropy_pair(zeros, torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 1, 0]]))
    assert value.item() == pytest.approx(math.log(3) + math.log(2), abs=1e-6)
    # two examples, two heads, padding on both sides (and large scores on padded keys, which must not count)
    scores = torch.tensor([
        [[[0.0, math.log(2), 9.0], [1.0, 1.0, 9.0]], [[2.0, -1.0, 9.0], [0.5, 0.0, 9.0]]],
        [[[0.3, 0.1, -0.2], [9.0, 9.0, 9.0]], [[1.0, 2.0, 3.0], [9.0, 9.0, 9.0]]],
    ])
    target_mask, english_mask = torch.tensor([[1, 1], [1, 0]]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    computed = cross_entropy_pair(scores, target_mask, english_mask)
    assert computed.tolist() == pytest.approx(_entropy_by_hand(scores, target_mask, english_mask), abs=1e-6)
    # one head, one real target query: softmax([0, ln 2]) = [1/3, 2/3]; English queries over one real target key: 0
    single = cross_entropy_pair(torch.tensor([[[[0.0, math.log(2), 9.0], [5.0, 5.0, 5.0]]]]),
                                torch.tensor([[1, 0]]), torch.tensor([[1, 1, 0]]))
    assert single.item() == pytest.approx(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)), abs=1e-6)


def test_lambda_stays_strictly_between_0_and_one_half():
    entropy = torch.tensor([0.0, 1e-3, 0.5, 3.0, 50.0])
    for w in (-1e4, -5.0, 0.0, 1.0, 5.0, 1e4):
        for b in (-1e4, -3.0, 0.0, 3.0, 1e4):
            lambdas = gate_lambda(torch.tensor([w, b]), entropy)
            assert bool(((lambdas > 0) & (lambdas < LAMBDA_MAX)).all()), (w, b, lambdas)
    mixup = _mixup()
    generator = torch.Generator().manual_seed(3)
    ids, mask = _rows(generator, 3, [5, 2, 7], 7)
    english, english_mask = _rows(generator, 3, [4, 6, 1], 6)
    mixup(input_ids=ids, attention_mask=mask, source_input_ids=english, source_attention_mask=english_mask)
    lambdas = mixup.last_lambdas()
    assert lambdas.shape == (3,) and bool(((lambdas > 0) & (lambdas < LAMBDA_MAX)).all())
    assert len(set(lambdas.tolist())) == 3  # per example


def test_the_sampling_probability_follows_the_schedule():
    for k in (1000, 2000):
        assert gold_probability(0, k) == pytest.approx(k / (k + 1))
        middle = round(k * math.log(k))
        assert gold_probability(middle, k) == pytest.approx(0.5, abs=1e-3)
        steps = [0, 10, 100, 1000, 5000, 10_000, 50_000, 10**9]
        values = [gold_probability(s, k) for s in steps]
        assert values == sorted(values, reverse=True) and values[-1] == 0.0
        for step in (5, 7000, 20_000):
            assert gold_probability(step, k) == pytest.approx(k / (k + math.exp(step / k)))
    # the draws: a function of (seed, step), gold about as often as the schedule says
    draws = [uses_gold(1, s, 1000) for s in range(6000, 8000)]
    assert draws == [uses_gold(1, s, 1000) for s in range(6000, 8000)]
    expected = sum(gold_probability(s, 1000) for s in range(6000, 8000))
    assert abs(sum(draws) - expected) < 4 * math.sqrt(expected)


def test_outputs_do_not_depend_on_batchmates_or_padding():
    mixup = _mixup()
    generator = torch.Generator().manual_seed(5)
    ids, mask = _rows(generator, 4, [6, 3, 8, 2], 8)
    english, english_mask = _rows(generator, 4, [5, 7, 2, 4], 7)
    with torch.no_grad():
        together = mixup(input_ids=ids, attention_mask=mask, source_input_ids=english,
                         source_attention_mask=english_mask).logits
        lambdas = mixup.last_lambdas()
        for i, (length, english_length) in enumerate([(6, 5), (3, 7), (8, 2), (2, 4)]):
            alone = mixup(input_ids=ids[i:i + 1, :length], attention_mask=mask[i:i + 1, :length],
                          source_input_ids=torch.nn.functional.pad(english[i:i + 1, :english_length], (0, 5), value=1),
                          source_attention_mask=torch.nn.functional.pad(english_mask[i:i + 1, :english_length], (0, 5)))
            assert torch.allclose(alone.logits, together[i:i + 1], atol=1e-5), i
            assert mixup.last_lambdas()[0].item() == pytest.approx(lambdas[i].item(), abs=1e-6)


def test_training_loss_backpropagates_into_the_gate_and_the_save_load_round_trip_predicts_the_same(tmp_path):
    mixup = _mixup().train()
    generator = torch.Generator().manual_seed(2)
    ids, mask = _rows(generator, 3, [5, 3, 6], 6)
    english, english_mask = _rows(generator, 3, [4, 6, 2], 6)
    inputs = dict(input_ids=ids, attention_mask=mask, source_input_ids=english, source_attention_mask=english_mask)
    loss = mixup(**inputs, labels=torch.tensor([0, 2, 1])).loss
    loss.backward()
    assert torch.isfinite(loss) and mixup.gate.grad is not None and bool(mixup.gate.grad.abs().sum() > 0)
    mixup.eval()
    with torch.no_grad():
        before = mixup(**inputs).logits
    mixup.save_pretrained(tmp_path / "adapter")
    loaded = XMixupModel.load(load_flare_model(tiny_models.xlmr_classifier(0), tmp_path / "adapter"),
                              tmp_path / "adapter")
    assert torch.equal(loaded.gate, mixup.gate.detach()) and loaded.layer == 1
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, before, atol=1e-6)
    with pytest.raises(FlareError, match="not an x-mixup adapter"):
        XMixupModel.load(loaded.model, tmp_path)


def test_what_cannot_mix_is_refused_in_one_line():
    with pytest.raises(FlareError, match=r"mixup_layer: 2 is past the model's layers 0\.\.1"):
        check_mixing(tiny_models.xlmr_classifier().config, 2)
    with pytest.raises(FlareError, match="BERT / RoBERTa / XLM-R encoders, not llama"):
        check_mixing(tiny_models.llama().config, 0)
    check_mixing(tiny_models.bert_classifier().config, 1)
    with pytest.raises(FlareError, match="x-mixup reads the English side"):
        _mixup()(input_ids=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.long))
