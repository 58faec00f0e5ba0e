"""FLARE-MT encoder states: correct language tag, shapes, masks, safetensors cache."""

from __future__ import annotations

import pytest
import torch
from tiny_mt import available_data_dir, shared_tiny_nllb

from flare.errors import FlareError
from flare.mt.encoder import EncoderStateStore, MTEncoder, precompute_encoder_states

TEXTS = ["Aku seneng banget karo panganan iki.", "Enak.", "Rotine enak lan regane uga mirah, aku mesthi bali."]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> MTEncoder:
    return MTEncoder(str(shared_tiny_nllb(tmp_path_factory, available_data_dir())), max_length=64)


def test_text_is_tagged_with_its_own_language(encoder):
    batch = encoder.tokenize(TEXTS, "jav")
    jav_id = encoder.tokenizer.convert_tokens_to_ids("jav_Latn")
    eng_id = encoder.tokenizer.convert_tokens_to_ids("eng_Latn")
    assert jav_id != eng_id
    assert batch["input_ids"][:, 0].tolist() == [jav_id] * 3
    assert encoder.tokenize(TEXTS, "sw")["input_ids"][0, 0] == encoder.tokenizer.convert_tokens_to_ids("swh_Latn")
    with pytest.raises(FlareError, match="not covered by NLLB"):
        encoder.tokenize(TEXTS, "nij")


def test_states_shapes_masks_and_padding(encoder):
    states, mask = encoder.encode(TEXTS, "jav")
    lengths = encoder.tokenize(TEXTS, "jav")["attention_mask"].sum(1)
    assert states.shape == (3, int(lengths.max()), encoder.hidden_size) and states.dtype == torch.float32
    assert mask.shape == states.shape[:2] and mask.sum(1).tolist() == lengths.tolist()
    assert mask[1, -1] == 0 and mask[:, 0].all()  # right padding
    assert torch.all(states[mask == 0] == 0) and states[mask == 1].abs().sum() > 0
    assert not states.requires_grad and not any(p.requires_grad for p in encoder.encoder.parameters())
    alone, _ = encoder.encode(TEXTS[1:2], "jav")
    assert torch.allclose(alone[0], states[1, : alone.shape[1]], atol=1e-5)  # padding does not leak
    tagged_english, _ = encoder.encode(TEXTS[1:2], "eng")
    assert not torch.allclose(alone, tagged_english)  # the tag changes the states


def test_truncation_to_max_length(encoder):
    states, mask = encoder.encode(["kata " * 200], "jav")
    assert states.shape[1] == 64 and mask.sum() == 64


def test_precomputed_states_roundtrip_through_safetensors(encoder, tmp_path, monkeypatch):
    store = precompute_encoder_states(encoder, TEXTS + TEXTS[:1], "jav", tmp_path, batch_size=2, show_progress=False)
    shards = list(store.directory.glob("*"))
    assert len(shards) == 2 and all(p.suffix == ".safetensors" for p in shards)
    direct_states, direct_mask = encoder.encode(TEXTS, "jav")
    fresh = EncoderStateStore(tmp_path, encoder.model_name, max_length=64)  # no model needed to read
    states, mask = fresh.get(TEXTS, "jav")
    assert torch.equal(mask, direct_mask) and torch.allclose(states, direct_states, atol=1e-5)

    calls = []
    monkeypatch.setattr(encoder, "encode", lambda texts, lang: calls.append(texts))
    precompute_encoder_states(encoder, TEXTS, "jav", tmp_path, show_progress=False)
    assert calls == []  # everything was cached
    with pytest.raises(FlareError, match="no stored encoder state"):
        fresh.get(TEXTS, "sun")  # same text, other language: other key
    with pytest.raises(FlareError, match="no stored encoder state"):
        EncoderStateStore(tmp_path, encoder.model_name, max_length=32).get(TEXTS, "jav")


def test_states_computed_in_another_dtype_are_cached_apart(encoder, tmp_path):
    half = MTEncoder(encoder.model_name, max_length=64, dtype="bfloat16")
    assert (encoder.dtype_name, half.dtype_name) == ("float32", "bfloat16")
    precompute_encoder_states(half, TEXTS, "jav", tmp_path, show_progress=False)
    with pytest.raises(FlareError, match="no stored encoder state"):
        EncoderStateStore(tmp_path, encoder.model_name, max_length=64).get(TEXTS, "jav")  # a float32 reader
    reader = EncoderStateStore(tmp_path, encoder.model_name, max_length=64, encoder_dtype="bfloat16")
    stored, _ = reader.get(TEXTS, "jav")
    assert torch.equal(stored, half.encode(TEXTS, "jav")[0])
    exact = precompute_encoder_states(encoder, TEXTS, "jav", tmp_path, show_progress=False)  # encoded again
    assert torch.equal(exact.get(TEXTS, "jav")[0], encoder.encode(TEXTS, "jav")[0])
    assert not torch.equal(exact.get(TEXTS, "jav")[0], stored)


def test_a_batch_of_several_languages_tags_each_text_with_its_own(encoder, tmp_path):
    """Joint FLARE-MT (issue 38): a batch mixes languages; every row equals that text encoded alone
    with its own language's tag, whether encoded now or read back from the store."""
    languages = ["jav", "sun", "jav"]
    states, mask = encoder.encode_each(TEXTS, languages)
    for code in ("jav", "sun"):
        precompute_encoder_states(encoder, [t for t, c in zip(TEXTS, languages) if c == code], code, tmp_path,
                                  show_progress=False)
    stored, stored_mask = EncoderStateStore(tmp_path, encoder.model_name, encoder.max_length).get(TEXTS, languages)
    assert torch.equal(mask, stored_mask) and torch.allclose(states, stored, atol=1e-6)
    for row, (text, code) in enumerate(zip(TEXTS, languages)):
        alone, alone_mask = encoder.encode([text], code)
        length = int(alone_mask.sum())
        assert int(mask[row].sum()) == length and torch.allclose(states[row, :length], alone[0, :length], atol=1e-5)
    other, _ = encoder.encode([TEXTS[1]], "jav")  # the tag matters: sun's row is not jav's encoding
    assert not torch.allclose(states[1, : other.shape[1]], other[0], atol=1e-5)
