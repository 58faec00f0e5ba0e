"""Properties of the fused model over every architecture family x every fusion: causality on
decoders, an example's output independent of its batchmates and of padding, training forward
equal to generation, and an English pass equal to PEFT's disable_adapter()."""

import itertools
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.config import FUSIONS

_BASE_DIR = tempfile.TemporaryDirectory(prefix="flare-4bit-")  # removed when the module is collected


def llama_4bit():
    """The tiny Llama quantized to NF4 by bitsandbytes (its CPU kernels)."""
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    path = Path(_BASE_DIR.name) / "llama"
    if not path.is_dir():
        tiny.llama(hidden_size=64, intermediate_size=128).save_pretrained(path)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = LlamaForCausalLM.from_pretrained(path, quantization_config=quantization, device_map="cpu").eval()
    # seeded like every tiny builder: loaded from disk, the adapter's initial weights would otherwise
    # follow whatever test ran before, and the 4-bit model's float error varies with them
    torch.manual_seed(0)
    return model


DECODERS = {"llama": tiny.llama, "gemma2": tiny.gemma2, "qwen2": tiny.qwen2, "llama4bit": llama_4bit}
ENCODERS = {"xlmr": tiny.xlmr_classifier, "bert": tiny.bert_classifier}
ARCHS = {**DECODERS, **ENCODERS, "mt5": tiny.mt5}
PAD = {"mt5": 0}  # the pad id of each tiny model's config, tiny.PAD otherwise
START = torch.tensor([[0, 7, 8, 9]])  # mT5 decoder input: the start token and three answer tokens


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding, which grows with the logits' scale (matmul's are cubic)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * max(1.0, expected.abs().max().item()))


def build(arch: str, fusion: str, **config):
    heads = 2 if fusion.startswith("cross_attention") else 1
    model = get_flare_model(ARCHS[arch](), FlareConfig(fusion=fusion, cross_attention_heads=heads, **config)).eval()
    tiny.randomize_lora_B(model, std=0.5)
    return model


def ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, tiny.VOCAB, (length,), generator=torch.Generator().manual_seed(seed))


def stack(rows: list[torch.Tensor], side: str, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded to a common length on `side`."""
    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), pad)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        out[i, where], mask[i, where] = row, 1
    return out, mask


def outputs(model, arch, target, target_side, source, source_side):
    """Each row's outputs at its real positions: per-token logits (decoders, mT5's decoder) or
    the classification logits (encoders)."""
    pad = PAD.get(arch, tiny.PAD)
    t, t_mask = stack(target, target_side, pad)
    s, s_mask = stack(source, source_side, pad)
    extra = {"decoder_input_ids": START.expand(len(target), -1)} if arch == "mt5" else {}
    with torch.no_grad():
        logits = model(input_ids=t, attention_mask=t_mask, source_input_ids=s, source_attention_mask=s_mask,
                       **extra).logits
    if arch in DECODERS:
        return [logits[i][t_mask[i].bool()] for i in range(len(target))]
    return list(logits)


# Llama, XLM-R and mT5 run every fusion in the fast tier; the other families of each kind are
# the same code path (marked slow, run by `make test`).
SLOW_ARCHS = ("gemma2", "qwen2", "bert", "llama4bit")


def _fusion_params(archs):
    return [
        pytest.param(a, f, id=f"{a}-{f}", marks=[pytest.mark.slow] if a in SLOW_ARCHS else [])
        for a in archs for f in FUSIONS
    ]


# ---------------------------------------------------------------------------------- causality

@pytest.mark.parametrize("arch,fusion", _fusion_params(DECODERS))
def test_a_later_target_token_never_changes_an_earlier_logit(arch, fusion):
    model = build(arch, fusion)
    target, source = ids(8, 0)[None], ids(8, 1)[None]
    later = target.clone()
    later[0, 5:] = ids(3, 2)
    with torch.no_grad():
        out = model(input_ids=target, source_input_ids=source).logits
        changed = model(input_ids=later, source_input_ids=source).logits
    close(out[:, :5], changed[:, :5])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_mt5_decoder_is_causal_and_independent_of_the_encoder_length(fusion):
    model = build("mt5", fusion)
    source = ids(6, 1)[None]
    decoder = torch.cat([START, ids(2, 3)[None]], 1)  # 6 decoder tokens: as long as the encoder input
    later = decoder.clone()
    later[0, 4:] = ids(2, 4)
    with torch.no_grad():
        def run(decoder_ids):
            return model(input_ids=ids(6, 0)[None], source_input_ids=source, decoder_input_ids=decoder_ids).logits

        out, changed, short = run(decoder), run(later), run(decoder[:, :4])
    close(out[:, :4], changed[:, :4])
    close(out[:, :4], short)  # equal lengths do not turn on encoder masks


# ---------------------------------------------------------------------- batchmates and padding

# the padding sides each backbone itself is invariant to (encoders read position 0: right only)
SIDES = {**{a: (("left", "left"), ("right", "left")) for a in DECODERS},
         "xlmr": (("right", "right"), ("right", "left")), "bert": (("right", "right"),),
         "mt5": (("right", "right"), ("left", "left"))}


@pytest.mark.parametrize("arch,fusion", _fusion_params(ARCHS))
def test_an_example_is_independent_of_its_batchmates_and_their_padding(arch, fusion):
    model = build(arch, fusion)
    example_target, example_source = ids(5, 0), ids(6, 1)
    alone = outputs(model, arch, [example_target], "right", [example_source], "right")[0]
    # a batchmate longer on one side and shorter on the other, so the example is padded on each
    mates = ((ids(9, 2), ids(3, 3)), (ids(3, 4), ids(10, 5)))
    for (target_side, source_side), (mate_target, mate_source) in itertools.product(SIDES[arch], mates):
        batched = outputs(model, arch, [example_target, mate_target], target_side,
                          [example_source, mate_source], source_side)[0]
        close(batched, alone)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_flare_mt_states_pair_the_prompt_the_same_with_and_without_the_answer(fusion):
    model = build("llama", fusion, source_dim=12)
    prompt, answer = ids(6, 0)[None], ids(3, 1)[None]
    states = torch.randn(1, 9, 12, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 7 + [0] * 2])  # right-padded, as an MT encoder pads
    with torch.no_grad():
        training = model(input_ids=torch.cat([prompt, answer], 1), source_states=states,
                         source_attention_mask=mask).logits
        prompt_only = model(input_ids=prompt, source_states=states, source_attention_mask=mask).logits
    close(training[:, :6], prompt_only)


# ------------------------------------------------------------------ training forward == generation

def _generate(model, prompt, source, steps=2, **kwargs):
    out = model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), source_input_ids=source, max_new_tokens=steps,
        min_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
        pad_token_id=tiny.PAD, **kwargs,
    )
    return out.sequences, out.logits


def _training_forward(model, sequence, source, right_aligned):
    """The forward pass a training batch would make: under right alignment the English side carries
    masked positions under the tokens past the prompt (formats.py's layout)."""
    extra = sequence.shape[1] - PROMPT_LENGTH
    mask = torch.ones_like(source)
    if right_aligned and extra:
        source = torch.cat([source, torch.full((1, extra), tiny.PAD)], 1)
        mask = torch.cat([mask, torch.zeros(1, extra, dtype=torch.long)], 1)
    with torch.no_grad():
        return model(input_ids=sequence, source_input_ids=source, source_attention_mask=mask).logits


PROMPT_LENGTH = 6
GENERATION_CASES = [  # (alignment, decode_fusion, use_cache): every fusion, cached where it is exact
    ("right", "none", True), ("left", "none", False), ("right", "last", False), ("left", "last", True),
]


@pytest.mark.parametrize("arch,fusion", _fusion_params(DECODERS))
def test_generation_equals_the_training_forward_at_prefill_and_every_step(arch, fusion):
    for alignment, decode, use_cache in GENERATION_CASES:
        if use_cache and decode == "last" and fusion in ("matmul", "matmul_relu", "cross_attention"):
            continue  # refused (test_model_errors); exact without the cache, which the other cases run
        model = build(arch, fusion, alignment=alignment, decode_fusion=decode)
        prompt, source = ids(PROMPT_LENGTH, 0)[None], ids(8 if alignment == "left" else 5, 1)[None]
        sequences, logits = _generate(model, prompt, source, use_cache=use_cache)
        for step, step_logits in enumerate(logits):
            forward = _training_forward(model, sequences[:, : PROMPT_LENGTH + step], source, alignment == "right")
            close(step_logits, forward[:, -1])


def test_use_cache_off_through_a_generation_config_gives_the_cached_result():
    model = build("llama", "cross_attention_target_queries", decode_fusion="last")
    prompt, source = ids(PROMPT_LENGTH, 0)[None], ids(5, 1)[None]
    cached = _generate(model, prompt, source)
    uncached = _generate(model, prompt, source, generation_config=GenerationConfig(use_cache=False))
    model.generation_config.use_cache = False
    default_off = _generate(model, prompt, source)
    for other in (uncached, default_off):
        assert torch.equal(other[0], cached[0])
        close(torch.stack(other[1]), torch.stack(cached[1]))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_mt5_generation_equals_the_training_forward(fusion):
    model = build("mt5", fusion)
    inputs, source = ids(7, 0)[None], ids(6, 1)[None]
    out = model.generate(input_ids=inputs, source_input_ids=source, max_new_tokens=3, min_new_tokens=3,
                         do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        forward = model(input_ids=inputs, source_input_ids=source, decoder_input_ids=out.sequences[:, :-1]).logits
    for step, step_logits in enumerate(out.logits):
        close(step_logits, forward[:, step])


# ------------------------------------------------------------ English pass == disable_adapter()

# a module before the last fused one (mT5's encoder embeds through `shared`, which PEFT wraps apart)
SAVED = {**{a: ["embed_tokens"] for a in DECODERS}, **{a: ["word_embeddings"] for a in ENCODERS},
         "mt5": ["encoder.block.0.layer.1.DenseReluDense.wo"]}


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=[pytest.mark.slow] if a in SLOW_ARCHS else []) for a in ARCHS]
)
def test_english_pass_equals_peft_disable_adapter_with_modules_to_save(arch):
    model = build(arch, "add", modules_to_save=SAVED[arch])
    with torch.no_grad():  # a trained copy of the embeddings: the English pass must not see it
        for name, parameter in model.named_parameters():
            if "modules_to_save" in name:
                parameter.add_(torch.randn_like(parameter))
    source, mask = stack([ids(6, 1), ids(4, 2)], "right", PAD.get(arch, tiny.PAD))
    extra = {"decoder_input_ids": START.expand(2, -1)} if arch == "mt5" else {}
    with model.peft_model.disable_adapter():
        expected = tiny.record_inputs(model.backbone, model.fused_modules,
                                      lambda: model.backbone(input_ids=source, attention_mask=mask, **extra))
    last = model.fused_modules[-1]  # downstream of the saved module
    adapted = tiny.record_inputs(model.backbone, [last],
                                 lambda: model.backbone(input_ids=source, attention_mask=mask, **extra))
    assert not torch.allclose(adapted[last][0], expected[last][0])  # the saved module matters
    with torch.no_grad():
        model(input_ids=source, attention_mask=mask, source_input_ids=source, source_attention_mask=mask, **extra)
    for name in model.fused_modules:
        torch.testing.assert_close(model._side.recorded[name], expected[name][0], rtol=0, atol=0)
