"""Bad input gets a FlareError with a one-line message naming the problem."""

import pytest
import torch
from torch import nn

import tiny_models as tiny
from flare import FlareConfig, FlareError, get_flare_model

IDS = tiny.batch(2, 6, seed=0)[0]


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("field,value,match", [
    ("fusion", "concat", "unknown fusion 'concat'"),
    ("source_position", "output", "unknown source_position"),
    ("decode_fusion", "all", "unknown decode_fusion"),
    ("alignment", "middle", "unknown alignment"),
    ("r", 0, "r must be a positive integer"),
    ("source_dim", -3, "source_dim"),
])
def test_invalid_config_values(field, value, match):
    with pytest.raises(FlareError, match=match) as error:
        FlareConfig(**{field: value})
    _one_line(error)


def test_cross_attention_heads_must_divide_r():
    with pytest.raises(FlareError, match="cross_attention_heads=3 must be positive and divide r=8"):
        FlareConfig(fusion="cross_attention", cross_attention_heads=3)


def test_unknown_config_field():
    with pytest.raises(FlareError, match="unknown FlareConfig field"):
        FlareConfig.from_dict({"rank": 8})


def test_fuse_modules_matching_nothing():
    with pytest.raises(FlareError, match=r"fuse_modules \['wq'\] match no module of LlamaForCausalLM") as error:
        get_flare_model(tiny.llama(), FlareConfig(fuse_modules=["wq"], target_modules="all-linear"))
    _one_line(error)


def test_target_modules_matching_nothing():
    match = r"target_modules \['nonexistent'\] match no module of LlamaForCausalLM"
    with pytest.raises(FlareError, match=match) as error:
        get_flare_model(tiny.llama(), FlareConfig(target_modules=["q_proj", "v_proj", "nonexistent"]))
    _one_line(error)


def test_fused_modules_must_be_lora_targets():
    with pytest.raises(FlareError, match="are not among target_modules"):
        get_flare_model(tiny.llama(), FlareConfig(target_modules=["k_proj"]))


def test_unsupported_architecture_without_query_value_projections():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(FlareError, match="cannot tell which modules of Sequential are the query/value projections"):
        get_flare_model(model)


def test_model_already_wrapped():
    model = get_flare_model(tiny.llama(), FlareConfig())
    with pytest.raises(FlareError, match="already carries a PEFT adapter"):
        get_flare_model(model, FlareConfig())


@pytest.fixture(scope="module")
def model():
    return get_flare_model(tiny.llama(), FlareConfig(source_dim=12))


def test_batch_size_mismatch(model):
    with pytest.raises(FlareError, match="source batch size 3 does not match target batch size 2") as error:
        model(input_ids=IDS, source_input_ids=tiny.batch(3, 6, seed=1)[0])
    _one_line(error)


def test_source_states_width_mismatch(model):
    with pytest.raises(FlareError, match="source_states width 7 differs from source_dim 12"):
        model(input_ids=IDS, source_states=torch.randn(2, 6, 7))


def test_source_states_without_source_dim():
    model = get_flare_model(tiny.llama(), FlareConfig())
    with pytest.raises(FlareError, match=r"set FlareConfig\.source_dim"):
        model(input_ids=IDS, source_states=torch.randn(2, 6, 32))


def test_both_kinds_of_source(model):
    with pytest.raises(FlareError, match="not both"):
        model(input_ids=IDS, source_input_ids=IDS, source_states=torch.randn(2, 6, 12))


def test_source_mask_shape_mismatch(model):
    with pytest.raises(FlareError, match=r"source_attention_mask shape \(2, 4\) does not match the source \(2, 6\)"):
        model(input_ids=IDS, source_input_ids=IDS, source_attention_mask=torch.ones(2, 4))


def test_mask_without_source(model):
    with pytest.raises(FlareError, match="without source_input_ids or source_states"):
        model(input_ids=IDS, source_attention_mask=torch.ones(2, 6))


def test_generation_with_source_needs_the_cache(model):
    with pytest.raises(FlareError, match="needs use_cache=True"):
        model.generate(input_ids=IDS, source_input_ids=IDS, use_cache=False, max_new_tokens=2)
