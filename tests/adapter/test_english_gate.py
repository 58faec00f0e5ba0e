"""english_gate: a learned gate per fused module that scales the English side's change to the
target's bottleneck. At 1 it is FLARE, at 0 it is PEFT LoRA exactly; it trains, saves and loads."""

import copy

import pytest
import torch

import tiny_models as tiny
from flare import FlareConfig, get_flare_model, load_flare_model
from flare.adapter.model import GATE_SCALE


def _model(gate: bool, fusion: str = "add_relu", seed: int = 0):
    model = get_flare_model(tiny.llama(seed), FlareConfig(fusion=fusion, english_gate=gate)).eval()
    tiny.randomize_lora_B(model)
    return model


def _logits(model, english: bool = True):
    ids, mask = tiny.batch(2, 7, seed=0)
    src, src_mask = tiny.batch(2, 9, seed=1)
    extra = {"source_input_ids": src, "source_attention_mask": src_mask} if english else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **extra).logits


@pytest.mark.parametrize("fusion", ["add_relu", "mul", "cross_attention"])
def test_a_gate_at_one_is_flare_and_at_zero_is_lora(fusion):
    gated, plain = _model(True, fusion), _model(False, fusion)
    gated.load_state_dict(plain.state_dict(), strict=False)  # the same LoRA (and fusion) weights
    assert set(gated.english_gates) and all(float(theta) == 0.0 for theta in gated.english_gates.values())
    torch.testing.assert_close(_logits(gated), _logits(plain), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for theta in gated.english_gates.values():
            theta.fill_(-1 / GATE_SCALE)  # g = 1 + 64 * (-1/64) = 0 exactly
    assert torch.equal(_logits(gated), _logits(plain, english=False))  # bit for bit: t + 0 * (f - t) = t
    assert not torch.allclose(_logits(plain), _logits(plain, english=False))


def test_the_gate_trains_and_survives_save_and_load(tmp_path):
    model = _model(True).train()
    ids, mask = tiny.batch(2, 7, seed=0)
    src, src_mask = tiny.batch(2, 9, seed=1)
    loss = model(input_ids=ids, attention_mask=mask, labels=ids, source_input_ids=src,
                 source_attention_mask=src_mask).loss
    loss.backward()
    grads = [g.grad for g in model.english_gates.values()]
    assert all(g is not None for g in grads) and any(float(g) != 0.0 for g in grads)
    with torch.no_grad():
        for number, gate in enumerate(model.english_gates.values()):
            gate.fill_(0.25 * number)
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = load_flare_model(tiny.llama(0), tmp_path)
    assert loaded.flare_config.english_gate
    assert [float(g) for g in loaded.english_gates.values()] == [0.25 * n for n in range(len(grads))]
    assert list(loaded.english_gate_values()) == loaded.fused_modules
    assert list(loaded.english_gate_values().values()) == [1 + GATE_SCALE * 0.25 * n for n in range(len(grads))]
    assert torch.equal(_logits(loaded), _logits(model))
    assert not any(g.requires_grad for g in loaded.english_gates.values())  # eval unless is_trainable


def test_without_the_option_nothing_changes():
    model = _model(False)
    assert len(model.english_gates) == 0 and model.english_gate_values() == {}
    assert not any("english_gates" in key for key in model.flare_state_dict())
    copy.deepcopy(model)  # a plain FLARE adapter still deep-copies and saves as before


def test_an_adapter_saved_before_the_option_existed_loads_as_plain_flare(tmp_path):
    import json

    model = _model(False)
    model.save_pretrained(tmp_path)
    config = tmp_path / "flare_config.json"
    saved = json.loads(config.read_text())
    saved["config"].pop("english_gate")  # what adapters saved before the option was added hold
    config.write_text(json.dumps(saved))
    loaded = load_flare_model(tiny.llama(0), tmp_path)
    assert not loaded.flare_config.english_gate and torch.equal(_logits(loaded), _logits(model))
