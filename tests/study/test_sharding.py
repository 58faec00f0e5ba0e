"""What an accelerate FSDP launch config asks is read from the environment accelerate launch sets;
what flare-xlt cannot honour is refused in one line by the plan, before any work."""

import pytest

from flare.errors import FlareError
from flare.study.sharding import ShardingPlan, check_sharding, requested_sharding
from tiny_models import llama
from tiny_study import save_tiny_llama, toy_study

# what `accelerate launch --config_file examples/accelerate/fsdp2.yaml` puts in each process's environment
FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
         "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_OFFLOAD_PARAMS": "false",
         "FSDP_ACTIVATION_CHECKPOINTING": "false", "ACCELERATE_MIXED_PRECISION": "bf16"}


def test_no_fsdp_launch_means_no_sharding():
    assert requested_sharding({}) is None
    assert requested_sharding({"ACCELERATE_USE_FSDP": "false", "FSDP_VERSION": "2"}) is None
    check_sharding("cuda", "float32", load_in_4bit=True, english_gate=True, env={})  # nothing to refuse without FSDP


def test_the_shipped_config_is_read():
    assert requested_sharding(FSDP2) == ShardingPlan(None, True)
    named = {**FSDP2, "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer, XLMRobertaLayer"}
    assert requested_sharding(named).layers == ("LlamaDecoderLayer", "XLMRobertaLayer")
    kept = {**FSDP2, "FSDP_RESHARD_AFTER_FORWARD": "false"}
    assert requested_sharding(kept).reshard_after_forward is False
    check_sharding("cuda", "bfloat16", load_in_4bit=False, env=FSDP2)


@pytest.mark.parametrize("change,match", [
    ({"FSDP_VERSION": "1"}, "FSDP version 1; flare-xlt shards with FSDP2 only"),
    ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "gradient_checkpointing: true"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "each transformer layer"),
    ({"FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}, "each transformer layer"),
])
def test_unsupported_fsdp_settings_are_refused_in_one_line(change, match):
    with pytest.raises(FlareError, match=match) as error:
        requested_sharding({**FSDP2, **change})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("device,dtype,four_bit,gate,match", [
    ("cuda", "bfloat16", True, False, "load_in_4bit with FSDP2 is not supported"),
    ("cuda", "bfloat16", False, True, "english_gate with FSDP2 is not supported"),
    ("cuda", "float32", False, False, "mixed_precision: bf16 differs from the study's dtype float32"),
    ("mps", "bfloat16", False, False, "not on mps"),
])
def test_studies_the_launch_cannot_train_are_refused(device, dtype, four_bit, gate, match):
    with pytest.raises(FlareError, match=match) as error:
        check_sharding(device, dtype, four_bit, gate, env=FSDP2)
    assert "\n" not in str(error.value)


def test_the_plan_refuses_a_4bit_study_under_fsdp_before_any_work(tmp_path, monkeypatch):
    model = save_tiny_llama(tmp_path / "model", hidden=32)
    study = toy_study(model, tmp_path / "out", device="cpu", dtype="float32", load_in_4bit=True)
    for name, value in {**FSDP2, "ACCELERATE_MIXED_PRECISION": "no"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FlareError, match="load_in_4bit with FSDP2"):
        study.validate()
    assert not (tmp_path / "out").exists()


def test_shard_flare_model_refuses_what_fsdp2_cannot_shard(tmp_path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from flare import FlareConfig, get_flare_model, shard_flare_model

    gated = get_flare_model(llama(), FlareConfig(task_type="CAUSAL_LM", english_gate=True))
    with pytest.raises(FlareError, match="english_gate cannot be sharded"):
        shard_flare_model(gated)
    pytest.importorskip("bitsandbytes")
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16")
    base = AutoModelForCausalLM.from_pretrained(save_tiny_llama(tmp_path / "model", hidden=32),
                                                quantization_config=quantization, device_map="cpu")
    with pytest.raises(FlareError, match="4-bit"):
        shard_flare_model(get_flare_model(base, FlareConfig(task_type="CAUSAL_LM")))
    with pytest.raises(FlareError, match="initialised process group"):  # the model is fine; the launch is not
        shard_flare_model(get_flare_model(llama(), FlareConfig(task_type="CAUSAL_LM")))
