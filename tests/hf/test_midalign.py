"""Middle-layer alignment (flare/hf/midalign.py): the loss against a hand computation, pooling
independent of batchmates and padding, the two schedules, the layer setting."""

from __future__ import annotations

import math

import pytest
import torch

import tiny_models
from flare.adapter import FlareConfig, get_flare_model
from flare.errors import FlareError
from flare.hf.midalign import MidAlignModel, alignment_loss, mean_pool, resolve_align_layer


def _cross_entropy(logits: list[float], gold: int) -> float:
    return -logits[gold] + math.log(sum(math.exp(v) for v in logits))


def test_the_alignment_loss_equals_a_hand_computation():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    english = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cosines: t0.e0 = 1, t0.e1 = 1/sqrt2, t1.e0 = 0, t1.e1 = 1/sqrt2; divided by the temperature 0.1
    c = 1 / math.sqrt(2) / 0.1
    rows = _cross_entropy([10.0, c], 0) + _cross_entropy([0.0, c], 1)
    columns = _cross_entropy([10.0, 0.0], 0) + _cross_entropy([c, c], 1)
    expected = (rows / 2 + columns / 2) / 2
    assert alignment_loss(target, english).item() == pytest.approx(expected, rel=1e-5)
    # cosine: the vectors' lengths do not matter
    scaled = alignment_loss(target * torch.tensor([[3.0], [0.2]]), english * 7)
    assert scaled.item() == pytest.approx(expected, rel=1e-5)
    # a batch of three random pairs against the definition written out
    generator = torch.Generator().manual_seed(0)
    t, e = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    cos = [[float(torch.dot(t[i], e[j]) / t[i].norm() / e[j].norm()) / 0.1 for j in range(3)] for i in range(3)]
    by_hand = sum(_cross_entropy(cos[i], i) + _cross_entropy([cos[j][i] for j in range(3)], i) for i in range(3)) / 6
    assert alignment_loss(t, e).item() == pytest.approx(by_hand, rel=1e-5)


def test_pooled_vectors_do_not_depend_on_batchmates_or_padding():
    model = get_flare_model(tiny_models.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS",
                                                                       modules_to_save=["classifier"]))
    tiny_models.randomize_lora_B(model)
    aligned = MidAlignModel(model, 0).eval()
    generator = torch.Generator().manual_seed(4)
    lengths = [6, 2, 4]
    ids = torch.full((3, 9), tiny_models.PAD)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, :length] = torch.randint(3, tiny_models.VOCAB, (length,), generator=generator)
        mask[i, :length] = 1
    with torch.no_grad():
        together = mean_pool(aligned._states({"input_ids": ids, "attention_mask": mask}), mask)
        for i, length in enumerate(lengths):
            alone = aligned._states({"input_ids": ids[i:i + 1, :length], "attention_mask": mask[i:i + 1, :length]})
            assert torch.allclose(mean_pool(alone, mask[i:i + 1, :length]), together[i:i + 1], atol=1e-5)
    # pooling reads real tokens only: whatever the padded positions hold
    states = torch.randn(2, 4, 3, generator=generator)
    noisy = states.clone()
    noisy[1, 2:] = 1e6
    pad_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.equal(mean_pool(states, pad_mask), mean_pool(noisy, pad_mask))
    assert torch.allclose(mean_pool(states, pad_mask)[1], states[1, :2].mean(0))


def test_the_schedules_alternate_or_sum_the_two_losses():
    def batch():
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(3, tiny_models.VOCAB, (3, 5), generator=generator)
        english = torch.randint(3, tiny_models.VOCAB, (3, 6), generator=generator)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2]),
                    source_input_ids=english, source_attention_mask=torch.ones_like(english))

    def build(schedule, weight=1.0):
        torch.manual_seed(0)
        model = get_flare_model(tiny_models.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS",
                                                                           modules_to_save=["classifier"]))
        return MidAlignModel(model, 1, schedule, weight).eval()

    alternate = build("alternate")
    alternate.set_training_step(0)
    task = alternate(**batch())
    alternate.set_training_step(1)
    align = alternate(**batch())
    assert task.align_loss is None and align.task_loss is None
    assert torch.equal(task.loss, task.task_loss) and torch.equal(align.loss, align.align_loss)
    summed = build("sum", 0.25)(**batch())
    assert summed.loss.item() == pytest.approx(task.loss.item() + 0.25 * align.loss.item(), rel=1e-5)
    # at test time (no English side) it is the LoRA model itself
    plain = {k: v for k, v in batch().items() if not k.startswith("source_")}
    assert torch.equal(alternate(**plain).logits, alternate.model(**plain).logits)


def test_the_layer_setting_is_checked_against_the_depth():
    assert resolve_align_layer(0, 12) == 6 and resolve_align_layer(0, 1) == 1 and resolve_align_layer(12, 12) == 12
    with pytest.raises(FlareError, match="align_layer: 13 is past the model's 12 layers"):
        resolve_align_layer(13, 12)


def test_on_a_decoder_the_answer_tokens_are_not_part_of_the_aligned_sentence():
    model = get_flare_model(tiny_models.llama(), FlareConfig(task_type="CAUSAL_LM"))
    tiny_models.randomize_lora_B(model)
    aligned = MidAlignModel(model, 0).eval()
    aligned.set_training_step(1)  # an alignment step of the alternation
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(3, tiny_models.VOCAB, (3, 6), generator=generator)
    labels = torch.full_like(ids, -100)
    labels[:, 4:] = ids[:, 4:]  # the last two tokens are the answer
    english = torch.randint(3, tiny_models.VOCAB, (3, 6), generator=generator)
    english_mask = torch.ones_like(english)
    english_mask[:, 4:] = 0  # the English side carries padding under the answer (flare.hf.formats)
    with torch.no_grad():
        loss = aligned(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, source_input_ids=english,
                       source_attention_mask=english_mask).loss
        prompt = torch.ones_like(ids)
        prompt[:, 4:] = 0
        target = mean_pool(aligned._states({"input_ids": ids, "attention_mask": torch.ones_like(ids)}), prompt)
        source = mean_pool(aligned._states({"input_ids": english, "attention_mask": english_mask}), english_mask)
    assert aligned.layer == 1 and loss.item() == pytest.approx(alignment_loss(target, source).item(), rel=1e-5)
