"""Fuzzing the adapter API (fuzz_support.py states the rule): FlareConfig fields of any type and
value, put on a tiny model, and the English-side arguments of forward and generate (shapes,
dtypes, masks, devices, lists, ids outside the vocabulary). The target-side arguments are
transformers' own and stay valid here."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from fuzz_support import check_api, fuzz, numbers, tally, texts, values
from hypothesis import assume, given
from hypothesis import strategies as st

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.config import ALIGNMENTS, DECODE_FUSIONS, FUSIONS, SOURCE_POSITIONS

FIELDS = [f.name for f in dataclasses.fields(FlareConfig)]
SIZES = ("r", "source_dim", "cross_attention_heads")
GOOD = {
    "r": st.integers(1, 8), "lora_alpha": st.integers(1, 32), "lora_dropout": st.sampled_from([0.0, 0.1]),
    "fusion": st.sampled_from(FUSIONS), "source_position": st.sampled_from(SOURCE_POSITIONS),
    "decode_fusion": st.sampled_from(DECODE_FUSIONS), "alignment": st.sampled_from(ALIGNMENTS),
    "cross_attention_heads": st.sampled_from([1, 2, 4]), "english_gate": st.booleans(),
    "mask_source_padding": st.booleans(), "target_modules": st.sampled_from([None, "all-linear", ["q_proj", "v_proj"]]),
    "fuse_modules": st.sampled_from([None, ["q_proj"], ["v_proj", "q_proj"]]), "source_dim": st.sampled_from([None, 8]),
    "cross_attention_dropout": st.sampled_from([0.0, 0.5]), "task_type": st.sampled_from([None, "CAUSAL_LM"]),
}


@st.composite
def config_fields(draw) -> dict:
    fields = {}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if name in GOOD and draw(st.booleans()):
            fields[name] = draw(GOOD[name])
        else:
            fields[name] = draw(st.one_of(values, numbers, texts))
    for name in SIZES:  # a size past its declared Range would only measure how torch fails to allocate it
        value = fields.get(name)
        assume(not (isinstance(value, int) and not isinstance(value, bool) and value > 4096))
    return fields


@fuzz("flare_config")
@given(fields=config_fields(), family=st.sampled_from(["llama", "xlmr"]))
def test_flare_config_fields_on_a_tiny_model(fields, family):
    def call():
        config = FlareConfig(**fields)
        backbone = tiny.llama() if family == "llama" else tiny.xlmr_classifier()
        model = get_flare_model(backbone, config)
        ids, mask = tiny.batch(2, 5, seed=0)
        source = {"source_input_ids": ids, "source_attention_mask": mask}
        if config.source_dim:
            source = {"source_states": torch.randn(2, 4, config.source_dim), "source_attention_mask": mask[:, :4]}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(ids, mask, **source)

    tally("flare_config", check_api(call))


@pytest.fixture(scope="module")
def models():
    built = {
        "llama": get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear")),
        "xlmr": get_flare_model(tiny.xlmr_classifier(), FlareConfig()),
        "mt": get_flare_model(tiny.llama(), FlareConfig(source_dim=8)),
    }
    for model in built.values():
        tiny.randomize_lora_B(model)
    return built


DTYPES = [torch.long, torch.int32, torch.int8, torch.uint8, torch.bool, torch.float32, torch.float16, torch.bfloat16,
          torch.float64, torch.complex64]


@st.composite
def tensors(draw, kind: str):
    """A source tensor: mostly well-formed, sometimes of the wrong shape, dtype, device or values."""
    batch = draw(st.sampled_from([2, 2, 2, 1, 3, 4, 0]))
    length = draw(st.sampled_from([1, 3, 6, 9, 0]))
    shape = (batch, length, 8) if kind == "states" else (batch, length)
    odd = draw(st.sampled_from(["none", "none", "none", "shape", "dtype", "device", "list", "values", "scalar"]))
    if odd == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    if kind == "ids":
        tensor = torch.randint(0, tiny.VOCAB, shape) if all(shape) else torch.zeros(shape, dtype=torch.long)
    elif kind == "mask":
        tensor = torch.randint(0, 2, shape)
    else:
        tensor = torch.randn(shape)
    if odd == "dtype":
        tensor = tensor.to(draw(st.sampled_from(DTYPES)))
    elif odd == "device":
        tensor = tensor.to("meta")
    elif odd == "values" and tensor.numel():
        tensor = tensor.to(torch.float32)
        tensor.view(-1)[draw(st.integers(0, tensor.numel() - 1))] = draw(numbers.filter(lambda x: abs(x) < 2**62))
        if kind != "states":
            tensor = tensor.to(draw(st.sampled_from([torch.long, torch.float32])))
    elif odd == "list":
        return tensor.tolist()
    elif odd == "scalar":
        return draw(st.one_of(st.none(), st.integers(), texts))
    return tensor


@fuzz("forward_arguments")
@given(which=st.sampled_from(["llama", "xlmr", "mt"]), data=st.data(), generate=st.booleans())
def test_forward_and_generate_with_any_english_side(models, which, data, generate):
    model = models[which]
    ids, mask = tiny.batch(2, 6, seed=0)
    kind = "states" if which == "mt" else "ids"
    source = {f"source_{'states' if kind == 'states' else 'input_ids'}": data.draw(tensors(kind))}
    if data.draw(st.integers(0, 3)):
        source["source_attention_mask"] = data.draw(tensors("mask"))
    if data.draw(st.integers(0, 9)) == 0:  # both kinds at once, or a mask alone
        source = data.draw(st.sampled_from([{"source_attention_mask": mask}, {**source, "source_states": ids}]))
    generating = generate and which != "xlmr"

    def call():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if generating:
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False, **source)
            else:
                out = model(ids, mask, **source)
                assert torch.isfinite(out.logits).all(), "non-finite logits from accepted inputs"

    tally("forward_arguments", check_api(call))
