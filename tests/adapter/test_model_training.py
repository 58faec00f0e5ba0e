"""Training paths: gradient checkpointing keeps the fusion (the reference code's worst bug), QLoRA
on a 4-bit base, and every fusion on every architecture."""

import pytest
import torch

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.config import FUSIONS


def _loss_and_grads(checkpointing, reentrant=False, fusion="add_relu", source="ids"):
    torch.manual_seed(0)
    config = FlareConfig(fusion=fusion, target_modules="all-linear", source_dim=12 if source == "states" else None,
                         lora_dropout=0.0)
    model = get_flare_model(tiny.llama(), config).train()
    tiny.randomize_lora_B(model)
    if checkpointing == "transformers":  # the convention Trainer and training scripts use
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    elif checkpointing == "activation":  # transformers 5's new name
        model.activation_checkpointing_enable({"use_reentrant": reentrant})
    elif checkpointing:
        model.gradient_checkpointing_enable(use_reentrant=reentrant)
    ids, mask = tiny.batch(2, 7, seed=0, pad_right=2)
    src, src_mask = tiny.batch(2, 9, seed=1, pad_right=3)
    inputs = (
        {"source_input_ids": src} if source == "ids"
        else {"source_states": torch.randn(2, 9, 12, generator=torch.Generator().manual_seed(2))}
    )
    loss = model(input_ids=ids, attention_mask=mask, labels=ids, source_attention_mask=src_mask, **inputs).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    plain = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    return loss.detach(), grads, plain.detach()


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize(
    "fusion,source",
    [("add_relu", "ids"), ("cross_attention", "ids"), ("cross_attention_target_queries", "ids"), ("add", "states")],
)
def test_gradient_checkpointing_changes_neither_loss_nor_gradients(reentrant, fusion, source):
    loss, grads, plain = _loss_and_grads(False, fusion=fusion, source=source)
    loss_ckpt, grads_ckpt, _ = _loss_and_grads(True, reentrant, fusion=fusion, source=source)
    assert not torch.allclose(loss, plain)  # the fusion is active ...
    torch.testing.assert_close(loss_ckpt, loss)  # ... and survives checkpointing
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("style", ["transformers", "activation"])
def test_gradient_checkpointing_through_transformers_conventions_keeps_the_fusion(style, reentrant):
    loss, grads, plain = _loss_and_grads(False)
    loss_ckpt, grads_ckpt, _ = _loss_and_grads(style, reentrant)
    assert not torch.allclose(loss, plain)
    torch.testing.assert_close(loss_ckpt, loss)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_positional_attention_mask_is_seen_by_flare():
    model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear")).eval()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 7, seed=0, pad_left=3)
    src, src_mask = tiny.batch(2, 5, seed=1, pad_left=1)
    source = {"source_input_ids": src, "source_attention_mask": src_mask}
    with torch.no_grad():
        named = model(input_ids=ids, attention_mask=mask, **source).logits
        positional = model(ids, mask, **source).logits
    assert torch.equal(model._side.target_mask, mask)  # the fusion got the mask, not only the backbone
    assert torch.equal(positional, named)


def _four_bit_llama(tmp_path):
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    tiny.llama(hidden_size=64, intermediate_size=128).save_pretrained(tmp_path / "base")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    return LlamaForCausalLM.from_pretrained(tmp_path / "base", quantization_config=quantization, device_map="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["add_relu", "cross_attention"])
def test_qlora_on_a_4bit_nf4_base_trains_with_fusion(tmp_path, fusion):
    import bitsandbytes as bnb

    model = get_flare_model(_four_bit_llama(tmp_path), FlareConfig(fusion=fusion, target_modules="all-linear")).train()
    assert isinstance(model._lora[model.fused_modules[0]].base_layer, bnb.nn.Linear4bit)
    tiny.randomize_lora_B(model)
    ids, _ = tiny.batch(2, 6, seed=0)
    src, _ = tiny.batch(2, 6, seed=1)
    loss = model(input_ids=ids, labels=ids, source_input_ids=src).loss
    plain = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss) and not torch.allclose(loss, plain)
    model(input_ids=ids, labels=ids, source_input_ids=src).loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None]
    assert trained and all("lora_" in n or "fusion_modules" in n for n in trained)
    if fusion == "cross_attention":
        assert any("fusion_modules" in n for n in trained)


ARCHITECTURES = {
    "llama": (tiny.llama, {}),
    "gemma2": (tiny.gemma2, {}),
    "qwen2": (tiny.qwen2, {}),
    "xlmr-cls": (tiny.xlmr_classifier, {"labels": torch.tensor([0, 2])}),
    "xlmr-qa": (tiny.xlmr_qa, {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([3, 4])}),
    "bert-cls": (tiny.bert_classifier, {"labels": torch.tensor([0, 1])}),
    "mt5": (tiny.mt5, {}),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_on_every_architecture(arch, fusion):
    build, targets = ARCHITECTURES[arch]
    model = get_flare_model(
        build(), FlareConfig(fusion=fusion, cross_attention_heads=2 if fusion.startswith("cross_attention") else 1)
    ).train()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 8, seed=0, pad_right=2)
    src, src_mask = tiny.batch(2, 6, seed=1, pad_right=1)
    if arch in ("llama", "gemma2", "qwen2", "mt5"):
        targets = {"labels": ids[:, :5].contiguous() if arch == "mt5" else ids}
    out = model(input_ids=ids, attention_mask=mask, source_input_ids=src, source_attention_mask=src_mask, **targets)
    plain = model(input_ids=ids, attention_mask=mask, **targets)
    assert torch.isfinite(out.loss)
    logits = out.logits if hasattr(out, "logits") else out.start_logits
    plain_logits = plain.logits if hasattr(plain, "logits") else plain.start_logits
    assert (logits - plain_logits).abs().max() > 1e-4  # the source reached the output
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if "lora_A" in name or "fusion_modules" in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_mt5_fuses_in_the_encoder_only():
    model = get_flare_model(tiny.mt5(), FlareConfig())
    names = model.fused_modules
    assert names and all(n.startswith("encoder.") for n in names)  # decoder: plain LoRA (docs/reference-code.md)
    assert any(n.startswith("decoder.") and "lora_A" in n for n, _ in model.backbone.named_modules())
    tiny.randomize_lora_B(model)
    ids, _ = tiny.batch(2, 7, seed=0)
    src, _ = tiny.batch(2, 7, seed=1)
    decoder_ids = ids[:, :3]
    model(input_ids=ids, decoder_input_ids=decoder_ids, source_input_ids=src)
    assert set(model._side.recorded) == set(names)  # every fused module got its English input


def test_m2m100_encoder_states_drive_flare_mt():
    mt = tiny.m2m100()
    text, text_mask = tiny.batch(2, 10, seed=0, pad_right=3)
    with torch.no_grad():
        states = mt.get_encoder()(input_ids=text, attention_mask=text_mask).last_hidden_state
    model = get_flare_model(tiny.xlmr_classifier(), FlareConfig(source_dim=states.shape[-1])).train()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 8, seed=1)
    out = model(
        input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1]), source_states=states,
        source_attention_mask=text_mask,
    )
    out.loss.backward()
    assert model.source_projection.weight.grad.abs().sum() > 0
    assert model.source_projection.in_features == 24 and model.source_projection.out_features == 32
