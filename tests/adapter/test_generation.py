"""Generation: the English prompt is encoded once by a forward pass; the prefill fuses
position-aligned; decoding steps fuse nothing ("none") or the last English prompt state ("last")."""

import pytest
import torch

import tiny_models as tiny
from flare import FlareConfig, get_flare_model


def _decoder(**config):
    model = get_flare_model(tiny.llama(), FlareConfig(target_modules="all-linear", alignment="left", **config)).eval()
    tiny.randomize_lora_B(model, std=0.5)
    return model


def _greedy(model, ids, steps=4, **source):
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                         do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=tiny.PAD,
                         **source)
    return out.sequences, out.logits  # raw logits: min_new_tokens masks EOS in scores


def test_english_prompt_is_encoded_once_and_prefill_matches_a_forward_pass():
    model = _decoder()
    calls = []
    record = model._recorder.record
    model._recorder.record = lambda run: calls.append(1) or record(run)
    ids, _ = tiny.batch(2, 6, seed=0)
    src, src_mask = tiny.batch(2, 5, seed=1, pad_right=2)
    _sequences, scores = _greedy(model, ids, source_input_ids=src, source_attention_mask=src_mask)
    assert len(calls) == 1
    with torch.no_grad():
        forward = model(input_ids=ids, source_input_ids=src, source_attention_mask=src_mask).logits[:, -1]
        plain = model(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(scores[0], forward)
    assert not torch.allclose(scores[0], plain)


def test_decode_fusion_none_runs_plain_lora_on_generated_tokens():
    model = _decoder(decode_fusion="none")
    ids, _ = tiny.batch(2, 6, seed=0)
    src, src_mask = tiny.batch(2, 6, seed=1, pad_right=1)
    sequences, scores = _greedy(model, ids, source_input_ids=src, source_attention_mask=src_mask)
    for step in range(1, len(scores)):
        prefix = sequences[:, : ids.shape[1] + step]
        with torch.no_grad():  # generated positions have no English partner under left alignment
            forward = model(input_ids=prefix, source_input_ids=src, source_attention_mask=src_mask).logits[:, -1]
        torch.testing.assert_close(scores[step], forward, rtol=1e-4, atol=1e-5)


def test_decode_fusion_last_reuses_the_last_english_prompt_state():
    model = _decoder(decode_fusion="last", source_dim=16)
    ids, _ = tiny.batch(2, 6, seed=0)
    states = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3))
    sequences, scores = _greedy(model, ids, source_states=states)
    none_model = _decoder(decode_fusion="none", source_dim=16)
    none_model.load_state_dict(model.state_dict())
    assert not torch.allclose(_greedy(none_model, ids, source_states=states)[1][2], scores[2])
    for step in range(1, len(scores)):
        prefix = sequences[:, : ids.shape[1] + step]
        # the same fusion as a forward pass whose source repeats the last English state
        extended = torch.cat([states, states[:, -1:].expand(-1, step, -1)], 1)
        with torch.no_grad():
            forward = model(input_ids=prefix, source_states=extended).logits[:, -1]
        torch.testing.assert_close(scores[step], forward, rtol=1e-4, atol=1e-5)


def test_beam_search_expands_the_english_side_with_the_beams():
    model = _decoder()
    ids, _ = tiny.batch(2, 5, seed=0)
    src, _ = tiny.batch(2, 5, seed=1)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), source_input_ids=src,
                         num_beams=3, num_return_sequences=2, max_new_tokens=3, do_sample=False, pad_token_id=tiny.PAD)
    assert out.shape[0] == 4


@pytest.mark.parametrize("decode_fusion", ["none", "last"])
def test_encoder_decoder_generation_fuses_with_a_source(decode_fusion):
    model = get_flare_model(tiny.mt5(), FlareConfig(decode_fusion=decode_fusion)).eval()
    tiny.randomize_lora_B(model, std=0.5)
    ids, mask = tiny.batch(2, 7, seed=0)
    src, src_mask = tiny.batch(2, 7, seed=1)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, output_scores=True,
                  return_dict_in_generate=True)
    fused = model.generate(source_input_ids=src, source_attention_mask=src_mask, **kwargs).scores[0]
    plain = model.generate(**kwargs).scores[0]
    assert not torch.allclose(fused, plain)
    assert model._side is None  # the English side is released after generation
