"""The FLARE layer computes y = W0 x_t + s B(phi(A x_s, A x_t)) with x_s from a frozen, adapter-free,
dropout-free, graph-free English pass, and reduces to PEFT LoRA or the base model where it should."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.config import FUSIONS

SCALE = 16 / 8  # lora_alpha / r
DEFAULT_TARGETS = {tiny.llama: ["q_proj", "v_proj"], tiny.xlmr_classifier: ["query", "value"], tiny.mt5: ["q", "v"]}


def reference_fusion(name, S, T, module):
    """phi written out independently of flare.adapter.fusion."""
    if name == "add":
        return S + T
    if name == "mul":
        return S * T
    if name == "add_relu":
        return S.clamp(min=0) + T.clamp(min=0)
    if name == "matmul":
        return torch.bmm(torch.bmm(S, T.transpose(1, 2)), T)
    if name == "matmul_relu":
        S, T = S.clamp(min=0), T.clamp(min=0)
        return torch.bmm(torch.bmm(S, T.transpose(1, 2)), T)
    heads, r = module.heads, S.shape[-1]
    if name == "cross_attention_target_queries":
        S, T = T, S  # the target asks, the English side answers
    q, k, v = module.q(S), module.k(T), module.v(T)
    out = []
    for h in range(heads):
        sl = slice(h * r // heads, (h + 1) * r // heads)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / (r // heads) ** 0.5
        out.append(scores.softmax(-1) @ v[..., sl])
    return torch.cat(out, -1)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fused_module_output_matches_formula(fusion):
    base = tiny.xlmr_classifier()
    unadapted = copy.deepcopy(base)
    heads = 2 if fusion.startswith("cross_attention") else 1
    model = get_flare_model(base, FlareConfig(fusion=fusion, cross_attention_heads=heads)).eval()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 9, seed=0)
    src, src_mask = tiny.batch(2, 9, seed=1)

    english = tiny.record_inputs(
        unadapted, model.fused_modules, lambda: unadapted(input_ids=src, attention_mask=src_mask)
    )
    target = tiny.record_inputs(
        model.backbone, model.fused_modules,
        lambda: model(input_ids=ids, attention_mask=mask, source_input_ids=src, source_attention_mask=src_mask),
    )
    assert len(model.fused_modules) == 4  # query and value in both layers
    for name in model.fused_modules:
        layer = model.backbone.get_submodule(name)
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        x_s, x_t, y = english[name][0], target[name][0], target[name][1]
        module = model.fusion_modules[name.replace(".", "__")] if heads == 2 else None
        with torch.no_grad():
            expected = layer.base_layer(x_t) + SCALE * reference_fusion(fusion, x_s @ A.T, x_t @ A.T, module) @ B.T
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_unfused_targets_run_plain_lora():
    base = tiny.llama()
    model = get_flare_model(base, FlareConfig(target_modules="all-linear")).eval()
    tiny.randomize_lora_B(model)
    ids, _ = tiny.batch(2, 6, seed=0)
    src, _ = tiny.batch(2, 6, seed=1)
    plain = ["model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.o_proj", "model.layers.0.mlp.down_proj"]
    seen = tiny.record_inputs(model.backbone, plain, lambda: model(input_ids=ids, source_input_ids=src))
    for name in plain:
        layer = model.backbone.get_submodule(name)
        x, y = seen[name]
        expected = layer.base_layer(x) + SCALE * layer.lora_B["default"](layer.lora_A["default"](x))
        torch.testing.assert_close(y, expected.detach(), rtol=1e-5, atol=1e-6)
    assert not any(name in model.fused_modules for name in plain)


@pytest.mark.parametrize("build", [tiny.llama, tiny.xlmr_classifier, tiny.mt5])
def test_without_source_equals_peft_lora_exactly(build):
    reference = get_peft_model(build(), LoraConfig(r=8, lora_alpha=16, target_modules=DEFAULT_TARGETS[build]))
    model = get_flare_model(build(), FlareConfig())
    tiny.randomize_lora_B(reference), tiny.randomize_lora_B(model)
    model.peft_model.load_state_dict(reference.state_dict())
    ids, mask = tiny.batch(2, 7, seed=3, pad_right=2)
    extra = {"decoder_input_ids": ids[:, :4]} if build is tiny.mt5 else {}
    expected = reference(input_ids=ids, attention_mask=mask, **extra).logits
    assert torch.equal(model(input_ids=ids, attention_mask=mask, **extra).logits, expected)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_zero_initialised_B_leaves_the_base_model_unchanged(fusion):
    base = tiny.llama()
    expected_ids, _ = tiny.batch(2, 8, seed=4)
    with torch.no_grad():
        expected = base(input_ids=expected_ids).logits
    model = get_flare_model(base, FlareConfig(fusion=fusion, target_modules="all-linear"))
    src, src_mask = tiny.batch(2, 5, seed=5, pad_left=2)
    out = model(input_ids=expected_ids, source_input_ids=src, source_attention_mask=src_mask).logits
    assert torch.equal(out, expected)


def test_gradients_reach_adapter_and_fusion_never_the_base():
    model = get_flare_model(
        tiny.llama(), FlareConfig(fusion="cross_attention", source_dim=12, target_modules="all-linear")
    )
    tiny.randomize_lora_B(model)
    ids, _ = tiny.batch(2, 6, seed=0)
    model(input_ids=ids, labels=ids, source_states=torch.randn(2, 6, 12)).loss.backward()
    for name, parameter in model.named_parameters():
        if any(k in name for k in ("lora_A", "lora_B", "fusion_modules", "source_projection")):
            assert parameter.requires_grad and parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert not parameter.requires_grad and parameter.grad is None, name


def test_english_pass_is_frozen_adapter_free_dropout_free_and_graph_free():
    base = tiny.xlmr_classifier(dropout=0.3)
    unadapted = copy.deepcopy(base).eval()
    model = get_flare_model(base, FlareConfig()).train()
    tiny.randomize_lora_B(model)
    src, src_mask = tiny.batch(2, 7, seed=2, pad_right=2)
    ids, mask = tiny.batch(2, 7, seed=3)
    english = tiny.record_inputs(
        unadapted, model.fused_modules, lambda: unadapted(input_ids=src, attention_mask=src_mask)
    )
    model(input_ids=ids, attention_mask=mask, source_input_ids=src, source_attention_mask=src_mask)
    recorded = model._side.recorded
    for name in model.fused_modules:
        assert recorded[name].grad_fn is None and not recorded[name].requires_grad
        assert torch.equal(recorded[name], english[name][0]), name  # adapters off, no dropout
    # training mode (dropout) is back on for the target pass, and the adapters are enabled again
    assert all(m.training for m in model.modules())
    assert not any(layer.disable_adapters for layer in model._recorder._tuner_layers)


def test_english_pass_stops_after_the_last_fused_module():
    model = get_flare_model(tiny.llama(), FlareConfig())
    calls = []
    model.backbone.lm_head.register_forward_hook(lambda *_: calls.append("lm_head"))
    model.backbone.model.layers[1].mlp.register_forward_hook(lambda *_: calls.append("last mlp"))
    ids, _ = tiny.batch(2, 6, seed=0)
    model(input_ids=ids, source_input_ids=ids)
    assert calls == ["last mlp", "lm_head"]  # the target pass only


def test_layer_input_equals_module_input_on_post_norm_encoders_but_not_pre_norm_decoders():
    def logits(build, position):
        model = get_flare_model(build(), FlareConfig(source_position=position, fusion="add"))
        tiny.randomize_lora_B(model)
        ids, _ = tiny.batch(2, 6, seed=0)
        src, _ = tiny.batch(2, 6, seed=1)
        return model(input_ids=ids, source_input_ids=src).logits

    torch.testing.assert_close(
        logits(tiny.xlmr_classifier, "layer_input"), logits(tiny.xlmr_classifier, "module_input")
    )
    assert not torch.allclose(logits(tiny.llama, "layer_input"), logits(tiny.llama, "module_input"))


def test_source_changes_the_output_once_B_is_trained():
    model = get_flare_model(tiny.llama(), FlareConfig())
    tiny.randomize_lora_B(model)
    ids, _ = tiny.batch(2, 6, seed=0)
    a, b = tiny.batch(2, 6, seed=1)[0], tiny.batch(2, 6, seed=2)[0]
    out_a = model(input_ids=ids, source_input_ids=a).logits
    out_b = model(input_ids=ids, source_input_ids=b).logits
    plain = model(input_ids=ids).logits
    assert not torch.allclose(out_a, out_b) and not torch.allclose(out_a, plain)
    assert F.mse_loss(out_a, plain) > 0
