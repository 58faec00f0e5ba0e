"""Stage 1 on a 4-bit base: the LoRA is merged exactly into the full-precision original weights,
saved in full precision, and quantised once when stage 2 loads it (documented in docs/scale.md)."""

import json

import pytest
import torch

import tiny_models as tiny
from flare.data.tasks import get_task
from flare.hf.loading import adapt, flare_config, load_backbone, merge_and_save
from flare.study.settings import AdapterSettings
from tiny_tokenizers import decoder_tokenizer


@pytest.mark.slow
def test_stage1_on_a_4bit_base_merges_exactly_into_full_precision_weights(tmp_path):
    task = get_task("nusax")
    tok = decoder_tokenizer(["Sentiment : negative neutral positive some words"])
    tiny.llama(hidden_size=64, intermediate_size=128, vocab_size=len(tok)).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    backbone, tokenizer, family = load_backbone(str(tmp_path / "base"), task, load_in_4bit=True)
    assert backbone.is_loaded_in_4bit
    model = adapt(backbone, flare_config(AdapterSettings(target_modules="all-linear").flare_kwargs(), task, family))
    tiny.randomize_lora_B(model, std=0.05)
    ids = torch.randint(3, len(tok), (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = model(input_ids=ids).logits
    layer = model.backbone.model.layers[0].self_attn.q_proj
    delta = 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight

    merge_and_save(model, tokenizer, tmp_path / "stage1", str(tmp_path / "base"), task)
    config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert "quantization_config" not in config  # saved in full precision
    full, _, _ = load_backbone(str(tmp_path / "stage1"), task)
    original, _, _ = load_backbone(str(tmp_path / "base"), task)
    merged_q = full.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(merged_q, original.model.layers[0].self_attn.q_proj.weight + delta.detach())

    quantized, _, _ = load_backbone(str(tmp_path / "stage1"), task, load_in_4bit=True)
    base_4bit, _, _ = load_backbone(str(tmp_path / "base"), task, load_in_4bit=True)
    with torch.no_grad():
        stage2_base = quantized(input_ids=ids).logits
        untrained = base_4bit(input_ids=ids).logits
    # one NF4 rounding of W + dW: the update survives (measured here: error about a quarter of the effect)
    assert (stage2_base - trained).abs().max() < 0.5 * (trained - untrained).abs().max()
