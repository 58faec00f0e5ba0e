"""Bad input gets a FlareError with a one-line message naming the problem."""

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel
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
    with pytest.raises(FlareError, match="give one of source_input_ids, source_states and english_states"):
        model(input_ids=IDS, source_input_ids=IDS, source_states=torch.randn(2, 6, 12))


def test_source_mask_shape_mismatch(model):
    with pytest.raises(FlareError, match=r"source_attention_mask shape \(2, 4\) does not match the source \(2, 6\)"):
        model(input_ids=IDS, source_input_ids=IDS, source_attention_mask=torch.ones(2, 4))


def test_mask_without_source(model):
    with pytest.raises(FlareError, match="without source_input_ids or source_states"):
        model(input_ids=IDS, source_attention_mask=torch.ones(2, 6))


@pytest.mark.parametrize("fusion", ["matmul", "cross_attention"])
def test_cached_decoding_steps_that_would_need_earlier_target_states_are_refused(fusion):
    model = get_flare_model(tiny.llama(), FlareConfig(fusion=fusion, decode_fusion="last"))
    with pytest.raises(FlareError, match="use_cache=False") as error:
        model.generate(input_ids=IDS, source_input_ids=IDS, max_new_tokens=2)
    _one_line(error)
    model.generate(input_ids=IDS, source_input_ids=IDS, max_new_tokens=2, use_cache=False)  # exact, so allowed


def test_a_forward_continuing_a_cache_with_a_source_is_refused():
    model = get_flare_model(tiny.llama(), FlareConfig())
    with torch.no_grad():
        past = model(input_ids=IDS, use_cache=True).past_key_values
    with pytest.raises(FlareError, match="past_key_values") as error:
        model(input_ids=IDS[:, -1:], past_key_values=past, source_input_ids=IDS)
    _one_line(error)


def test_fusing_only_decoder_modules_of_an_encoder_decoder_model_is_refused():
    with pytest.raises(FlareError, match="only encoder modules fuse") as error:
        get_flare_model(tiny.mt5(), FlareConfig(target_modules=["q", "v"], fuse_modules=["EncDecAttention.q"]))
    _one_line(error)


def _fused_llama():
    model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear")).eval()
    tiny.randomize_lora_B(model)
    return model


@pytest.mark.parametrize("call,match", [
    (lambda m: m.merge_and_unload(), "merge_and_unload.*cannot hold the fusion"),
    (lambda m: m.merge_adapter(), "merge_adapter.*cannot hold the fusion"),
    (lambda m: m.add_weighted_adapter(["default"], [1.0], "mix"), "cannot hold the fusion"),
    (lambda m: m.add_adapter("other", LoraConfig(r=4)), "holds exactly one adapter"),
    (lambda m: m.set_adapter("other"), "holds exactly one adapter"),
    (lambda m: m.delete_adapter("default"), "holds exactly one adapter"),
    (lambda m: m.load_adapter("anywhere", "other"), "holds exactly one adapter"),
])
def test_peft_methods_that_would_lose_the_fusion_are_refused(call, match):
    model = _fused_llama()
    expected = model(input_ids=IDS, source_input_ids=IDS).logits
    with pytest.raises(FlareError, match=match) as error:
        call(model)
    _one_line(error)
    assert torch.equal(model(input_ids=IDS, source_input_ids=IDS).logits, expected)  # nothing changed


def test_flare_model_is_a_peft_model_and_peft_methods_run_on_the_wrapped_model():
    model = _fused_llama()
    assert isinstance(model, PeftModel)
    assert model.get_base_model() is model.backbone and model.active_adapters == ["default"]
    model.set_adapter("default")  # its own adapter: allowed
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with model.disable_adapter():  # PEFT's switch: the base model, fusion and LoRA off together
        assert torch.equal(model(input_ids=IDS, source_input_ids=IDS).logits, model.backbone(input_ids=IDS).logits)


def test_layers_merged_behind_flare_s_back_are_refused_with_a_source():
    model = _fused_llama()
    plain = model(input_ids=IDS).logits
    model.peft_model.merge_adapter()  # the explicit LoRA-only route
    with pytest.raises(FlareError, match="merged into the base weights"):
        model(input_ids=IDS, source_input_ids=IDS)
    with pytest.raises(FlareError, match="merged into the base weights"):
        model.generate(input_ids=IDS, source_input_ids=IDS, max_new_tokens=2)
    torch.testing.assert_close(model(input_ids=IDS).logits, plain, rtol=1e-4, atol=1e-5)


def test_extra_positional_arguments_and_sources_given_to_the_backbone_are_refused():
    model = _fused_llama()
    with pytest.raises(FlareError, match="pass other arguments by name"):
        model(IDS, torch.ones_like(IDS), None)
    with pytest.raises(FlareError, match="works only through the FlareModel"):
        model.get_base_model()(input_ids=IDS, source_input_ids=IDS)


def test_a_deep_copy_is_independent_and_keeps_the_fusion():
    model = _fused_llama()
    expected = model(input_ids=IDS, source_input_ids=IDS).logits
    twin = copy.deepcopy(model)
    assert torch.equal(twin(input_ids=IDS, source_input_ids=IDS).logits, expected)
    with torch.no_grad():
        twin.get_base_model().lm_head.weight.zero_()
    assert torch.equal(model(input_ids=IDS, source_input_ids=IDS).logits, expected)
    assert not twin(input_ids=IDS, source_input_ids=IDS).logits.any()
    with pytest.raises(FlareError, match="works only through the FlareModel"):
        twin.get_base_model()(input_ids=IDS, source_input_ids=IDS)
