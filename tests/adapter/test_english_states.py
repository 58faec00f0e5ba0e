"""The English pass computed once (issue 36): model.english_states() handed back as english_states=
gives the same outputs, gradients and generations bit for bit; EnglishStateCache serves a
transformers.Trainer with the English pass run once per example and the same losses; stale
states are never reused; fuse_layers fuses the named layers only and stops the English pass early."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import tiny_models as tiny
from flare import FlareConfig, FlareError, get_flare_model
from flare.adapter.config import parse_layers
from flare.adapter.english_cache import EnglishStateCache


def _model(kind: str, **config):
    if kind == "llama":
        model = get_flare_model(tiny.llama(), FlareConfig(task_type="CAUSAL_LM", target_modules="all-linear", **config))
    else:
        model = get_flare_model(tiny.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS", **config))
    tiny.randomize_lora_B(model)
    return model


@pytest.mark.parametrize("kind,config", [
    ("llama", {"lora_dropout": 0.3}),
    ("llama", {"source_position": "layer_input", "fusion": "cross_attention", "cross_attention_dropout": 0.2}),
    ("xlmr", {"lora_dropout": 0.3, "fusion": "matmul"}),
])
def test_english_states_passed_back_give_the_same_loss_and_gradients(kind, config):
    model = _model(kind, **config).train()  # dropout on: its draws must match too
    ids, mask = tiny.batch(3, 8, seed=0, pad_right=2)
    padding = {"pad_left": 2} if kind == "llama" else {"pad_right": 2}
    source, source_mask = tiny.batch(3, 6, seed=1, **padding)
    labels = ids.masked_fill(mask == 0, -100) if kind == "llama" else torch.tensor([0, 1, 2])

    def step(**english):
        model.zero_grad()
        torch.manual_seed(7)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, source_attention_mask=source_mask,
                     **english).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    states = model.english_states(source, source_mask)
    assert all(not t.requires_grad for t in states.values()) and set(states) == set(model.fused_modules)
    inline_loss, inline_grads = step(source_input_ids=source)
    cached_loss, cached_grads = step(english_states=states)
    assert torch.equal(inline_loss, cached_loss)
    assert inline_grads.keys() == cached_grads.keys()
    assert all(torch.equal(inline_grads[n], cached_grads[n]) for n in inline_grads)


def test_generate_with_english_states_equals_generate_with_the_english_ids():
    model = _model("llama", decode_fusion="last").eval()
    ids, mask = tiny.batch(2, 5, seed=2, pad_left=1)
    source, source_mask = tiny.batch(2, 6, seed=3, pad_left=2)
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=tiny.PAD, source_attention_mask=source_mask)
    inline = model.generate(input_ids=ids, attention_mask=mask, source_input_ids=source, **settings)
    states = model.english_states(source, source_mask)
    cached = model.generate(input_ids=ids, attention_mask=mask, english_states=states, **settings)
    assert torch.equal(inline, cached)


def test_english_states_that_do_not_fit_are_refused_in_one_line():
    model = _model("llama")
    ids, mask = tiny.batch(2, 5, seed=2)
    states = model.english_states(*tiny.batch(2, 6, seed=3))
    name = next(iter(states))
    cases = [
        ({"english_states": states, "source_input_ids": ids}, "give one of"),
        ({"english_states": {"model.nope": states[name]}}, "is not one"),
        ({"english_states": {**states, name: states[name][:1]}}, "(batch, source length, width)"),
        ({"english_states": {name: states[name][:1]}}, "does not match target batch size"),
    ]
    for arguments, message in cases:
        with pytest.raises(FlareError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model(input_ids=ids, attention_mask=mask, **arguments)


def _trainer_losses(tmp_path, cache: EnglishStateCache | None):
    torch.manual_seed(0)
    model = _model("llama", lora_dropout=0.1)
    model.english_state_cache = cache
    ids, mask = tiny.batch(8, 6, seed=0, pad_right=2)
    source, source_mask = tiny.batch(8, 7, seed=1, pad_left=1)
    data = Dataset.from_dict({k: v.tolist() for k, v in {
        "input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100),
        "source_input_ids": source, "source_attention_mask": source_mask}.items()})
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, num_train_epochs=3, learning_rate=1e-2,
                             logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=3)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return losses, weights


@pytest.mark.slow
def test_a_trainer_with_the_cache_runs_the_english_pass_once_per_example_with_the_same_losses(tmp_path):
    cached = EnglishStateCache(length=7, rows=4, ram_bytes=1 << 20)
    recomputed = EnglishStateCache(length=7, rows=4, ram_bytes=1 << 20, memoize=False)
    losses, weights = _trainer_losses(tmp_path / "a", cached)
    same_losses, same_weights = _trainer_losses(tmp_path / "b", recomputed)
    assert cached.stats.computed == 8 and cached.stats.hits == 16  # 8 examples, 3 epochs
    assert recomputed.stats.computed == 24
    assert losses == same_losses and len(losses) == 6
    assert all(torch.equal(weights[n], same_weights[n]) for n in weights)
    # the canonical layout changes the English states by rounding only
    inline_losses, _ = _trainer_losses(tmp_path / "c", None)
    assert inline_losses == pytest.approx(losses, rel=1e-5)


def test_spilled_states_of_another_backbone_or_setting_are_never_reused(tmp_path):
    ids, mask = tiny.batch(3, 6, seed=1, pad_left=1)

    def fill(model) -> EnglishStateCache:
        cache = EnglishStateCache(length=6, rows=3, ram_bytes=0, disk_bytes=1 << 20, spill_dir=tmp_path)
        cache.states(model, ids, mask, {})
        cache.flush()
        return cache

    first = _model("llama")
    assert fill(first).stats.computed == 3
    assert fill(first).stats.hits == 3  # a new process (a resumed run) finds them on disk
    assert fill(_model("llama", source_position="layer_input")).stats.hits == 0
    other = _model("llama")
    with torch.no_grad():
        other.backbone.model.layers[1].mlp.down_proj.base_layer.weight[0, 0] += 1e-3
    assert fill(other).stats.hits == 0
    assert len(list(tmp_path.glob("*.safetensors"))) == 1  # the stale shards were removed


def test_fuse_layers_fuses_the_named_layers_and_the_english_pass_stops_after_the_last():
    assert parse_layers("0-2,5") == [0, 1, 2, 5] and parse_layers([3, 1]) == [1, 3] and parse_layers("") is None
    for bad in ("1-", "a", "3-1"):
        with pytest.raises(FlareError, match="fuse_layers"):
            parse_layers(bad)
    model = _model("llama", fuse_layers="0")
    assert model.fused_modules == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert any("layers.1" in n and "lora_A" in n for n, _ in model.named_parameters())  # still LoRA everywhere
    ran = []
    model.backbone.model.layers[1].register_forward_pre_hook(lambda *_: ran.append(1))
    model.english_states(*tiny.batch(2, 5, seed=1))
    assert not ran  # layer 1 never runs on the English side
    with pytest.raises(FlareError, match=r"fuse_layers \[2\]: LlamaForCausalLM has 2 layers \(0-1\)"):
        _model("llama", fuse_layers=[1, 2])


def test_one_cache_serves_models_in_turn_reusing_states_only_for_the_same_backbone():
    """A study's runs are new models on one frozen backbone: the same fingerprint reuses the states
    (bit for bit what a fresh pass gives); a model with other frozen weights empties the cache."""
    ids, mask = tiny.batch(3, 6, seed=1, pad_left=1)
    cache = EnglishStateCache(length=6, rows=3, ram_bytes=1 << 20)
    first = _model("llama")
    served = cache.states(first, ids, mask, {})
    twin = _model("llama")  # the same seed: the same frozen weights, another adapter
    assert cache.states(twin, ids, mask, {}) is not None and cache.stats.hits == 3 and cache.stats.computed == 3
    fresh = EnglishStateCache(length=6, rows=3, ram_bytes=1 << 20).states(twin, ids, mask, {})
    assert all(torch.equal(served[name], fresh[name]) for name in served)
    other = _model("llama")
    with torch.no_grad():
        other.backbone.model.layers[0].mlp.up_proj.base_layer.weight[0, 0] += 1e-3
    cache.states(other, ids, mask, {})
    assert cache.stats.computed == 6 and cache.stats.hits == 3  # nothing reused across backbones
    cache.states(first, ids, mask, {})
    assert cache.stats.computed == 9  # and the first backbone's states were dropped, not mixed in
