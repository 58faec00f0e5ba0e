"""How `flare analyze` reads a pair (flare/hf/representations.py), on a tiny random Llama with a
FLARE adapter: the fused path fuses the English side into the target and reads the English side as
FLARE fuses it (adapters off); the plain path reads each side through the adapter."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from flare import FlareConfig, get_flare_model
from flare.data.tasks import get_task
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.representations import layer_representations
from tiny_study import save_tiny_llama, write_toy_task


def test_fused_and_plain_readings_on_a_decoder(tmp_path):
    path = save_tiny_llama(tmp_path / "llama")
    task = get_task(str(write_toy_task(tmp_path / "task")))
    pairs = task.load_pairs("train", "de", None, None, "gold")[:5]
    tokenizer = AutoTokenizer.from_pretrained(path)
    formatter = PairFormatter(task, tokenizer, "decoder", "flare", FormatSettings(max_length=24))
    base = AutoModelForCausalLM.from_pretrained(path)
    base_target, base_english = layer_representations(base, formatter, pairs, "plain", batch_size=2)
    model = get_flare_model(AutoModelForCausalLM.from_pretrained(path), FlareConfig(r=4, alignment="right"))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    fused_target, fused_english = layer_representations(model, formatter, pairs, "fused", batch_size=3)
    plain_target, plain_english = layer_representations(model, formatter, pairs, "plain", batch_size=5)
    layers = len(base.model.layers) + 1
    assert len(fused_target) == len(plain_english) == layers and fused_target[0].shape == (5, 64)
    for layer in range(layers):  # FLARE's English side is the base model's: its pass runs with adapters off
        torch.testing.assert_close(fused_english[layer], base_english[layer], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_target[0], base_target[0])  # the embeddings carry no adapter
    last = layers - 1
    assert not torch.allclose(fused_target[last], plain_target[last], atol=1e-4)  # the English side is fused
    assert not torch.allclose(plain_target[last], base_target[last], atol=1e-4)  # the LoRA acts on the target
    assert not torch.allclose(plain_english[last], base_english[last], atol=1e-4)  # ... and on the English
