"""Save/load keeps outputs, stays a valid PEFT LoRA directory, and never unpickles anything."""

import json

import pytest
import torch
from peft import PeftModel

import flare.adapter.io as flare_io
import tiny_models as tiny
from flare import FlareConfig, FlareError, get_flare_model, load_flare_model


def _trained(**config):
    model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear", **config))
    tiny.randomize_lora_B(model)
    with torch.no_grad():
        for parameter in model.fusion_modules.parameters():
            parameter.add_(0.1)
    return model.eval()


INPUTS = dict(input_ids=tiny.batch(2, 6, seed=0)[0])
SOURCE = dict(source_input_ids=tiny.batch(2, 6, seed=1)[0])


@pytest.mark.parametrize(
    "config",
    [
        {}, {"fusion": "cross_attention"}, {"fusion": "cross_attention_target_queries"},
        {"source_dim": 10, "fusion": "mul"},
    ],
)
def test_save_then_load_keeps_outputs(tmp_path, config):
    model = _trained(**config)
    source = {"source_states": torch.randn(2, 6, 10)} if "source_dim" in config else SOURCE
    expected = model(**INPUTS, **source).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_flare_model(tiny.llama(), tmp_path / "adapter").eval()
    assert loaded.flare_config == model.flare_config
    assert torch.equal(loaded(**INPUTS, **source).logits, expected)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = load_flare_model(tiny.llama(), tmp_path / "adapter", is_trainable=True)
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_A" in n)


def test_saved_directory_is_a_plain_peft_lora_adapter_without_pickles(tmp_path):
    model = _trained(fusion="cross_attention")
    model.save_pretrained(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    expected = {"adapter_config.json", "adapter_model.safetensors", "flare_config.json", "flare_weights.safetensors"}
    assert expected <= files
    assert all(name.endswith((".json", ".safetensors", ".md")) for name in files), files
    peft_model = PeftModel.from_pretrained(tiny.llama(), tmp_path / "adapter").eval()
    assert torch.equal(peft_model(**INPUTS).logits, model(**INPUTS).logits)  # FLARE without a source
    assert not list(tmp_path.glob(".*saving*"))  # no staging leftovers


def test_a_planted_pickle_is_refused(tmp_path):
    _trained().save_pretrained(tmp_path / "adapter")
    directory = tmp_path / "adapter"
    weights = PeftModel.from_pretrained(tiny.llama(), directory).state_dict()
    (directory / "adapter_model.safetensors").unlink()
    torch.save(weights, directory / "adapter_model.bin")  # a pickle where weights belong
    with pytest.raises(FlareError, match="never pickles"):
        load_flare_model(tiny.llama(), directory)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    _trained(fusion="cross_attention").save_pretrained(tmp_path / "adapter")
    torch.save({"x": torch.ones(1)}, tmp_path / "adapter" / "flare_weights.safetensors")
    with pytest.raises(FlareError, match="cannot read"):
        load_flare_model(tiny.llama(), tmp_path / "adapter")


def test_adapter_for_another_base_model_is_refused(tmp_path):
    _trained().save_pretrained(tmp_path / "adapter")
    with pytest.raises(FlareError, match="cannot load the adapter"):
        load_flare_model(tiny.llama(hidden_size=48), tmp_path / "adapter")


def test_truncated_weights_are_refused(tmp_path):
    _trained().save_pretrained(tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FlareError, match="cannot load the adapter"):
        load_flare_model(tiny.llama(), tmp_path / "adapter")


def test_corrupt_config_and_missing_directory_are_refused(tmp_path):
    with pytest.raises(FlareError, match="not a FLARE adapter"):
        load_flare_model(tiny.llama(), tmp_path / "nothing")
    _trained().save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "flare_config.json").write_text("{not json")
    with pytest.raises(FlareError, match="corrupt"):
        load_flare_model(tiny.llama(), tmp_path / "adapter")


def test_an_interrupted_save_leaves_nothing_that_loads(tmp_path, monkeypatch):
    model = _trained(fusion="cross_attention")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flare_io, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "flare_config.json").exists()
    assert not list(tmp_path.glob(".*saving*"))


def test_resaving_over_an_older_adapter_replaces_it(tmp_path):
    _trained(fusion="cross_attention").save_pretrained(tmp_path / "adapter")
    _trained(fusion="add").save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "flare_weights.safetensors").exists()
    assert json.loads((tmp_path / "adapter" / "flare_config.json").read_text())["config"]["fusion"] == "add"
    load_flare_model(tiny.llama(), tmp_path / "adapter")


FAMILIES = {  # builder, the FLARE config, extra target arguments
    "llama": (tiny.llama, {"target_modules": "all-linear"}, {}),
    "xlmr": (tiny.xlmr_classifier, {"task_type": "SEQ_CLS"}, {}),
    "mt5": (tiny.mt5, {}, {"decoder_input_ids": tiny.batch(2, 3, seed=5)[0]}),
}


@pytest.mark.parametrize("adapter_name", ["default", "fr", "sw-v2"])
@pytest.mark.parametrize("family,fusion", [
    ("llama", "add_relu"), ("llama", "cross_attention"), ("xlmr", "cross_attention_target_queries"), ("mt5", "matmul"),
])
def test_every_adapter_name_saves_and_loads_identically(tmp_path, adapter_name, family, fusion):
    build, config, extra = FAMILIES[family]
    model = get_flare_model(build(), FlareConfig(fusion=fusion, **config), adapter_name)
    tiny.randomize_lora_B(model)
    model.eval()
    expected = model(**INPUTS, **SOURCE, **extra).logits
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()  # flat, whatever the name
    loaded = load_flare_model(build(), tmp_path / "adapter")
    assert loaded.adapter_name == adapter_name and loaded.active_adapters == [adapter_name]
    assert torch.equal(loaded(**INPUTS, **SOURCE, **extra).logits, expected)
    assert not torch.equal(loaded(**INPUTS, **extra).logits, expected)  # the fusion came back, not plain LoRA
    renamed = load_flare_model(build(), tmp_path / "adapter", adapter_name="other")
    assert renamed.active_adapters == ["other"] and torch.equal(renamed(**INPUTS, **SOURCE, **extra).logits, expected)


@pytest.mark.parametrize("fusion", ["cross_attention", "add_relu"])
def test_loaded_adapter_is_in_eval_mode_unless_trainable(tmp_path, fusion):
    model = _trained(fusion=fusion, lora_dropout=0.3, cross_attention_dropout=0.3).train()
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_flare_model(tiny.llama().train(), tmp_path / "adapter")
    assert not any(module.training for module in loaded.modules())
    first, second = (loaded(**INPUTS, **SOURCE).logits for _ in range(2))
    assert torch.equal(first, second)  # no dropout at inference
    trainable = load_flare_model(tiny.llama().train(), tmp_path / "adapter", is_trainable=True)
    assert all(module.training for module in trainable.fusion_modules.modules())


def test_load_adapter_reloads_the_own_adapter_in_place(tmp_path):
    model = _trained(fusion="cross_attention")
    model.save_pretrained(tmp_path / "adapter")
    other = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear", fusion="cross_attention")).eval()
    parameters = dict(other.named_parameters())
    assert not torch.equal(other(**INPUTS, **SOURCE).logits, model(**INPUTS, **SOURCE).logits)
    other.load_adapter(tmp_path / "adapter", "default")
    assert torch.equal(other(**INPUTS, **SOURCE).logits, model(**INPUTS, **SOURCE).logits)
    assert all(parameters[n] is p for n, p in other.named_parameters())  # in place: an optimizer keeps working
    wrong = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear", fusion="add"))
    with pytest.raises(FlareError, match="other FLARE settings"):
        wrong.load_adapter(tmp_path / "adapter", "default")
