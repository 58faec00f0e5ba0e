"""The Trainer + FSDP2 recipe of docs/library.md: its TrainingArguments become accelerate's FSDP2 plugin, whose
auto-wrap makes every layer holding a fused lora_A its own unit (so the fusion runs inside the
unit that owns A) and saves a full state dict that FlareModel.save_pretrained writes.

accelerate prepares FSDP only on GPUs (on the CPU, Accelerator falls back to DDP), so the
sharded Trainer run itself is exercised by benchmarks/gpu/fsdp2_check.py on two or more GPUs;
the same sharding layout is trained on the CPU by tests/study/test_fsdp.py."""

from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from transformers import TrainingArguments

from flare import FlareConfig, get_flare_model
from tiny_models import xlmr_classifier


def readme_arguments(output_dir) -> TrainingArguments:
    """The arguments of the docs/library.md block, as written there."""
    return TrainingArguments(
        output_dir, per_device_train_batch_size=8, learning_rate=5e-4, num_train_epochs=1,
        fsdp="full_shard auto_wrap",
        fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["XLMRobertaLayer"],
                     "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"},
    )


def test_readme_fsdp2_arguments_wrap_each_fused_layer_as_a_unit(tmp_path):
    args = readme_arguments(tmp_path / "out")
    plugin_args = args.fsdp_plugin_args
    assert plugin_args["fsdp_version"] == 2 and plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    model = get_flare_model(xlmr_classifier(), FlareConfig(task_type="SEQ_CLS"))
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    plugin.set_auto_wrap_policy(model)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, module in model.named_modules() if policy(module)]
    assert len(units) == model.backbone.config.num_hidden_layers
    # every fused module (where the fusion hook runs, on lora_A) lies inside exactly one unit
    prefix = "peft_model.base_model.model."
    for fused in model.fused_modules:
        assert sum((prefix + fused).startswith(unit + ".") for unit in units) == 1, fused
