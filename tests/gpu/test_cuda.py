"""The CUDA tier (marker `gpu`, skipped without CUDA; `make test-gpu`): a 4-bit study in bfloat16
that never leaves the GPU, FLARE generation against a hand-written greedy loop, and an adapter's
save/load round trip, all on this process's GPU. No dataset or Hub access: the toy task ships
with the repository."""

import json

import pytest
import torch

import tiny_models as tiny
from flare import FlareConfig, get_flare_model, load_flare_model
from flare.hf.device import resolve_device
from tiny_study import save_tiny_llama, toy_study

pytestmark = pytest.mark.gpu


def _devices(model: torch.nn.Module) -> set[str]:
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


# cuda:1 in one process: accelerate's own device there is the bare "cuda", which must not matter
@pytest.mark.parametrize("device", ["cuda", pytest.param(
    "cuda:1", marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU"))])
def test_a_4bit_llama_study_runs_on_the_gpu_in_bfloat16(device, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    import flare.study.pipeline

    seen = []
    for name in ("fit", "evaluate"):
        original = getattr(flare.study.pipeline, name)

        def spy(model, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, _devices(model)))  # nothing may stay behind on the CPU
            return _original(model, *args, **kwargs)

        monkeypatch.setattr(flare.study.pipeline, name, spy)
    model = save_tiny_llama(tmp_path / "llama")
    study = toy_study(model, tmp_path / "out", methods=["zero-shot", "translate-train", "flare"], load_in_4bit=True,
                      device=device, dtype="bfloat16")
    records = [json.loads(line) for line in flare.study.pipeline.compare(study).read_text().splitlines()]
    device = str(resolve_device(device))
    assert sorted(r["method"] for r in records) == ["flare", "translate-train", "zero-shot"]
    for record in records:
        assert (record["device"], record["dtype"], record["load_in_4bit"]) == (device, "bfloat16", True)
        assert record["placement"].startswith(f"device: {device} (") and record["placement"].endswith("4-bit nf4")
        assert 0 <= record["score"] <= 100
    assert seen and all(devices == {"cuda"} for _, devices in seen), seen
    stage1 = json.loads((tmp_path / "out" / "stage1" / "model" / "config.json").read_text())
    assert "quantization_config" not in stage1  # merged exactly into float32 weights, quantised again by stage 2


def _flare_llama(device, **config):
    model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear", **config)).to(device).eval()
    tiny.randomize_lora_B(model, std=0.5)
    return model


def test_flare_generation_on_the_gpu_equals_a_greedy_loop_by_hand():
    device = resolve_device("cuda")
    model = _flare_llama(device, alignment="right", decode_fusion="none")
    ids, mask = (t.to(device) for t in tiny.batch(2, 6, seed=0))
    source, source_mask = (t.to(device) for t in tiny.batch(2, 5, seed=1, pad_left=1))
    steps, eos = 5, model.backbone.config.eos_token_id
    with torch.no_grad():
        generated = model.generate(
            input_ids=ids, attention_mask=mask, source_input_ids=source, source_attention_mask=source_mask,
            max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=tiny.PAD,
        )[:, ids.shape[1]:]
        # by hand: the prefill fuses the English prompt; each later token runs plain LoRA on the cache
        out = model(input_ids=ids, attention_mask=mask, source_input_ids=source, source_attention_mask=source_mask,
                    use_cache=True)
        tokens = []
        for _ in range(steps):
            logits = out.logits[:, -1].clone()
            logits[:, eos] = float("-inf")  # as min_new_tokens does
            token = logits.argmax(-1, keepdim=True)
            tokens.append(token)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
    assert generated.device.type == "cuda"
    assert torch.equal(generated, torch.cat(tokens, dim=1))


def test_an_adapter_saved_on_the_gpu_loads_onto_the_gpu_unchanged(tmp_path):
    device = resolve_device("cuda")
    model = _flare_llama(device, fusion="cross_attention_target_queries", alignment="right")
    ids, mask = (t.to(device) for t in tiny.batch(2, 6, seed=0))
    source, source_mask = (t.to(device) for t in tiny.batch(2, 6, seed=1, pad_left=2))
    inputs = dict(input_ids=ids, attention_mask=mask, source_input_ids=source, source_attention_mask=source_mask)
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_flare_model(tiny.llama().to(device), tmp_path / "adapter")
    assert _devices(loaded) == {"cuda"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, before)
