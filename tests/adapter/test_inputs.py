"""API inputs that used to run and give a silently wrong result, or a raw torch error: each is now a
one-line FlareError, or is made right (and said)."""

import json
import warnings

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments, default_data_collator

import tiny_models as tiny
from flare import FlareConfig, FlareError, SourceCollator, get_flare_model, load_flare_model

IDS, MASK = tiny.batch(2, 6, seed=0)
SRC, SRC_MASK = tiny.batch(2, 7, seed=1, pad_left=2)


@pytest.fixture(scope="module")
def model():
    flare_model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear"))
    tiny.randomize_lora_B(flare_model)
    return flare_model


def _one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def _quiet(call, about: str):
    """call() gives no warning whose text contains `about` (libraries' own deprecation notes aside)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    assert not [w for w in caught if about in str(w.message)], [str(w.message) for w in caught]
    return result


def _logits(model, **source):
    with torch.no_grad():
        return model(IDS, MASK, **source).logits


# ----------------------------------------------------------------- a model that is not a FlareModel

@pytest.mark.parametrize("plain", ["transformers", "peft"])
def test_source_collator_refuses_a_model_that_is_not_a_flare_model(plain, model):
    base = tiny.xlmr_classifier()
    if plain == "peft":
        base = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    with pytest.raises(FlareError, match=r"not a FlareModel, and would ignore the English side") as error:
        SourceCollator(default_data_collator, pad_token_id=1, padding_side="right", model=base)
    _one_line(error)
    SourceCollator(default_data_collator, pad_token_id=1, padding_side="right", model=model)  # a FlareModel is fine


def _classification_data(n=4):
    ids, mask = tiny.batch(n, 5, seed=2)
    src, src_mask = tiny.batch(n, 6, seed=3)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": [0, 1, 2, 0][:n],
                              "source_input_ids": src.tolist(), "source_attention_mask": src_mask.tolist()})


def test_the_trainer_recipe_with_a_plain_model_fails_instead_of_training_without_the_english_side(tmp_path):
    """transformers.Trainer keeps only the columns the model's forward names: a plain model's
    names no source_*, so the English columns are dropped before the collator sees them."""
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True,
                             save_strategy="no")
    plain = tiny.xlmr_classifier()
    collator = SourceCollator(default_data_collator, pad_token_id=tiny.PAD, padding_side="right")
    trainer = Trainer(model=plain, args=args, train_dataset=_classification_data(), data_collator=collator)
    with pytest.raises(FlareError, match=r"no source_\* fields.*not a FlareModel") as error:
        trainer.train()
    _one_line(error)
    # given the model, the collator refuses before any training is set up
    with pytest.raises(FlareError, match="not a FlareModel"):
        SourceCollator(default_data_collator, pad_token_id=tiny.PAD, padding_side="right", model=plain)
    # the same recipe with a FlareModel trains with the English side
    flare_model = get_flare_model(tiny.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS"))
    collator = SourceCollator(default_data_collator, pad_token_id=tiny.PAD, padding_side="right", model=flare_model)
    loss = Trainer(model=flare_model, args=args, train_dataset=_classification_data(),
                   data_collator=collator).train().training_loss
    assert torch.isfinite(torch.tensor(loss))


# ----------------------------------------------------------------- masks

@pytest.mark.parametrize("bad", ["additive", "additive-large-negative", "twos", "half"])
def test_a_mask_that_is_not_zero_one_is_refused(bad, model):
    real = SRC_MASK.bool()
    mask = {
        "additive": torch.zeros(SRC.shape).masked_fill(~real, float("-inf")),
        "additive-large-negative": torch.zeros(SRC.shape).masked_fill(~real, -1e9),
        "twos": SRC_MASK * 2,
        "half": SRC_MASK * 0.5,
    }[bad]
    with pytest.raises(FlareError, match=r"must hold 1 \(real token\) and 0 \(padding\).*\(mask == 0\).long\(\)") as e:
        _logits(model, source_input_ids=SRC, source_attention_mask=mask)
    _one_line(e)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int32, torch.float16])
def test_a_zero_one_mask_of_any_dtype_fuses_exactly_as_an_integer_one(dtype, model):
    expected = _logits(model, source_input_ids=SRC, source_attention_mask=SRC_MASK)
    got = _logits(model, source_input_ids=SRC, source_attention_mask=SRC_MASK.to(dtype))
    assert torch.equal(got, expected)


# ----------------------------------------------------------------- ids without a mask

def test_ids_holding_the_pad_id_without_a_mask_are_refused(model):
    assert model.backbone.config.pad_token_id == tiny.PAD and bool((SRC == tiny.PAD).any())
    with pytest.raises(FlareError, match=rf"contain the pad id {tiny.PAD} but no source_attention_mask") as error:
        _logits(model, source_input_ids=SRC)
    _one_line(error)
    with pytest.raises(FlareError, match="contain the pad id"):
        model.generate(input_ids=IDS, attention_mask=MASK, source_input_ids=SRC, max_new_tokens=1)


def test_ids_without_padding_and_without_a_mask_fuse_as_all_real(model):
    full, _ = tiny.batch(2, 7, seed=4)
    got = _quiet(lambda: _logits(model, source_input_ids=full), "source_attention_mask")
    assert torch.equal(got, _logits(model, source_input_ids=full, source_attention_mask=torch.ones_like(full)))
    assert not torch.equal(got, _logits(model))


def test_without_a_pad_id_a_missing_mask_is_said_once():
    backbone = tiny.llama(pad_token_id=None)
    backbone.generation_config.pad_token_id = None
    flare_model = get_flare_model(backbone, FlareConfig())
    with pytest.warns(UserWarning, match="names no pad token: every English position counts as a real token"):
        _logits(flare_model, source_input_ids=SRC)
    _quiet(lambda: _logits(flare_model, source_input_ids=SRC), "pad token")  # said once per model


def test_the_generation_configs_pad_id_counts_too():
    backbone = tiny.llama(pad_token_id=None)
    backbone.generation_config.pad_token_id = tiny.PAD
    with pytest.raises(FlareError, match="contain the pad id"):
        _logits(get_flare_model(backbone, FlareConfig()), source_input_ids=SRC)


# ----------------------------------------------------------------- ids and states of the wrong kind

@pytest.mark.parametrize("source,match", [
    (SRC.tolist(), r"source_input_ids must be a torch tensor of token ids \(batch, length\), got a list; wrap it"),
    (SRC.clone().fill_(tiny.VOCAB + 5), rf"holds id {tiny.VOCAB + 5}, outside the model's vocabulary of {tiny.VOCAB}"),
    (SRC.clone().fill_(-1), r"holds id -1, outside the model's vocabulary"),
    (SRC.float(), r"must hold integer token ids, got dtype torch.float32"),
    (SRC[0], r"must be 2-D \(batch, length\), got shape \(7,\)"),
    (SRC[:, :0], r"is empty \(length 0\)"),
    (SRC.to("meta"), r"source_input_ids is on meta, the model's embeddings on cpu"),
])
def test_source_ids_of_the_wrong_kind_are_one_line_errors(source, match, model):
    with pytest.raises(FlareError, match=match) as error:
        _logits(model, source_input_ids=source, source_attention_mask=SRC_MASK)
    _one_line(error)


def test_a_target_given_as_a_list_with_a_source_is_a_one_line_error(model):
    with pytest.raises(FlareError, match="input_ids must be a torch tensor, got a list"):
        model(IDS.tolist(), source_input_ids=SRC, source_attention_mask=SRC_MASK)


@pytest.mark.parametrize("states,match", [
    ([[[0.0] * 8]], "source_states must be a torch tensor"),
    (torch.ones(2, 3, 8, dtype=torch.long), "must be floating point"),
    (torch.full((2, 3, 8), float("nan")), "NaN or infinite"),
    (torch.ones(2, 8), r"must be 3-D"),
])
def test_source_states_of_the_wrong_kind_are_one_line_errors(states, match):
    flare_model = get_flare_model(tiny.llama(), FlareConfig(source_dim=8))
    with pytest.raises(FlareError, match=match) as error:
        _logits(flare_model, source_states=states)
    _one_line(error)


# ----------------------------------------------------------------- loading onto another base

def _saved(tmp_path, **overrides):
    backbone = tiny.llama(**overrides)
    backbone.config._name_or_path = "org/llama-tiny"
    flare_model = get_flare_model(backbone, FlareConfig())
    flare_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_the_sidecar_records_the_base_model(tmp_path):
    meta = json.loads((_saved(tmp_path) / "flare_config.json").read_text())
    assert meta["base_model"] == {"name_or_path": "org/llama-tiny", "model_type": "llama",
                                  "layers": {"num_hidden_layers": 2}}


def test_an_adapter_onto_a_deeper_base_is_refused_unless_allowed(tmp_path):
    directory = _saved(tmp_path)
    deeper = tiny.llama(num_hidden_layers=3)
    before = {n for n, _ in deeper.named_modules()}
    with pytest.raises(FlareError, match=r"saved for a base with num_hidden_layers 2, this base has 3; pass "
                                         r"allow_base_mismatch=True") as error:
        load_flare_model(deeper, directory)
    _one_line(error)
    assert {n for n, _ in deeper.named_modules()} == before  # refused before PEFT touched the model
    with pytest.warns(UserWarning, match="num_hidden_layers 2, this base has 3"):
        load_flare_model(deeper, directory, allow_base_mismatch=True)


def test_an_adapter_onto_another_architecture_of_the_same_shapes_is_refused(tmp_path):
    directory = _saved(tmp_path)
    with pytest.raises(FlareError, match="model_type 'llama', this base is 'qwen2'"):
        load_flare_model(tiny.qwen2(), directory)


def test_an_adapter_onto_a_base_of_another_name_warns_unless_allowed(tmp_path):
    directory = _saved(tmp_path)
    other = tiny.llama(seed=5)
    other.config._name_or_path = "org/llama-tiny-instruct"
    with pytest.warns(UserWarning, match="saved for the base model 'org/llama-tiny', and is loading onto "
                                         "'org/llama-tiny-instruct'"):
        load_flare_model(other, directory)
    for name in ("/somewhere/else/llama-tiny", "/cache/models--org--llama-tiny/snapshots/0123abc"):
        same = tiny.llama()
        same.config._name_or_path = name  # the same model reached another way
        _quiet(lambda: load_flare_model(same, directory), "saved for")  # noqa: B023 - called at once
    other = tiny.llama(seed=5)
    other.config._name_or_path = "org/llama-tiny-instruct"
    _quiet(lambda: load_flare_model(other, directory, allow_base_mismatch=True), "saved for")


def test_an_adapter_saved_before_the_record_still_loads(tmp_path):
    directory = _saved(tmp_path)
    path = directory / "flare_config.json"
    meta = json.loads(path.read_text())
    del meta["base_model"]
    path.write_text(json.dumps(meta))
    _quiet(lambda: load_flare_model(tiny.llama(num_hidden_layers=3), directory), "saved for")
