"""Source and target tokens pair by position, per row from the row's own masks; padding never fuses."""

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.pairing import pack, partners, row_extent

M = torch.tensor


def test_row_extent_finds_each_rows_first_and_past_last_real_position():
    first, end = row_extent(M([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]), 3, 4)
    assert first.tolist() == [1, 0, 4] and end.tolist() == [3, 4, 0]
    first, end = row_extent(None, 2, 5)
    assert first.tolist() == [0, 0] and end.tolist() == [5, 5]


def test_left_alignment_pairs_the_first_real_tokens_of_each_row():
    t_first, t_end = row_extent(M([[1, 1, 1], [0, 1, 1]]), 2, 3)
    s_first, _ = row_extent(M([[1, 1, 0, 0], [0, 0, 1, 1]]), 2, 4)
    index = partners(torch.arange(3), t_first, t_end, s_first, 4, right_aligned=False)
    assert index.tolist() == [[0, 1, 2], [1, 2, 3]]  # row 1: target 1 <-> source 2, target 2 <-> source 3


def test_right_alignment_pairs_the_last_real_target_token_with_the_source_rows_end():
    t_first, t_end = row_extent(M([[1, 1, 1], [1, 1, 0]]), 2, 3)
    index = partners(torch.arange(3), t_first, t_end, torch.zeros(2, dtype=torch.long), 4, right_aligned=True)
    assert index.tolist() == [[1, 2, 3], [2, 3, 4]]  # row 1's right padding (index 4) has no partner


@settings(max_examples=80, deadline=None)
@given(n_t=st.integers(1, 8), n_s=st.integers(1, 8), pads=st.tuples(*[st.integers(0, 4)] * 4), right=st.booleans())
def test_real_tokens_pair_the_same_however_either_side_is_padded(n_t, n_s, pads, right):
    t_left, t_right, s_left, s_right = pads
    if right:
        s_right = 0  # under right alignment a source row's trailing positions are meaningful (module docstring)

    def real_pairs(tl, tr, sl, sr):
        """For each real target token, the rank of its real source partner (None: no partner)."""
        t_mask, s_mask = M([[0] * tl + [1] * n_t + [0] * tr]), M([[0] * sl + [1] * n_s + [0] * sr])
        t_first, t_end = row_extent(t_mask, 1, t_mask.shape[1])
        s_first, _ = row_extent(s_mask, 1, s_mask.shape[1])
        index = partners(torch.arange(t_mask.shape[1]), t_first, t_end, s_first, s_mask.shape[1], right)[0]
        ranks = [int(index[tl + k]) - sl for k in range(n_t)]
        return [r if 0 <= r < n_s else None for r in ranks]

    assert real_pairs(t_left, t_right, s_left, s_right) == real_pairs(0, 0, 0, 0)


def test_pack_moves_real_positions_to_the_aligned_end_in_order():
    states = torch.arange(5.0).view(1, 5, 1)
    mask = M([[1, 1, 1, 0, 0]])  # right-padded, as an MT encoder pads
    packed, packed_mask = pack(states, mask, right_aligned=True)
    assert packed.flatten().tolist()[2:] == [0.0, 1.0, 2.0] and packed_mask.tolist() == [[0, 0, 1, 1, 1]]
    packed, packed_mask = pack(states.flip(1), mask.flip(1), right_aligned=False)
    assert packed.flatten().tolist()[:3] == [2.0, 1.0, 0.0] and packed_mask.tolist() == [[1, 1, 1, 0, 0]]


def _model(fusion="add", **config):
    model = get_flare_model(tiny.xlmr_classifier(), FlareConfig(fusion=fusion, **config)).eval()
    tiny.randomize_lora_B(model)
    return model


def test_extra_source_padding_changes_nothing():
    model = _model()
    ids, mask = tiny.batch(2, 8, seed=0)
    src, src_mask = tiny.batch(2, 6, seed=1, pad_right=2)
    padded = torch.cat([src, torch.full((2, 5), tiny.PAD)], 1)
    padded_mask = torch.cat([src_mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    out = model(input_ids=ids, attention_mask=mask, source_input_ids=src, source_attention_mask=src_mask).logits
    out_padded = model(
        input_ids=ids, attention_mask=mask, source_input_ids=padded, source_attention_mask=padded_mask
    ).logits
    torch.testing.assert_close(out, out_padded)


@pytest.mark.parametrize("fusion", ["add", "cross_attention_target_queries"])
def test_source_padding_contributes_nothing_only_when_masked(fusion):
    ids, mask = tiny.batch(2, 8, seed=0)
    src, src_mask = tiny.batch(2, 8, seed=1, pad_right=3)
    other = src.clone()
    other[-1, -3:] = torch.tensor([5, 6, 7])  # different tokens at masked-out positions

    def logits(model, source):
        return model(input_ids=ids, attention_mask=mask, source_input_ids=source, source_attention_mask=src_mask).logits

    torch.manual_seed(0)
    masked = _model(fusion)
    torch.testing.assert_close(logits(masked, src), logits(masked, other))
    # without masking, padding positions fuse (the reference code's behaviour): the padding
    # tokens' states still reach the target, and the masked model ignores them
    torch.manual_seed(0)  # the same fusion weights as the masked model
    unmasked = _model(fusion, mask_source_padding=False)
    assert not torch.allclose(logits(unmasked, src), logits(masked, src))


def test_a_source_longer_than_the_target_is_cut_to_the_target_length():
    base = tiny.xlmr_classifier()
    unadapted = copy.deepcopy(base)
    model = get_flare_model(base, FlareConfig(fusion="add", alignment="left")).eval()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 5, seed=0)
    long_src, _ = tiny.batch(2, 9, seed=1)
    name = model.fused_modules[0]  # layer 0 query
    english = tiny.record_inputs(unadapted, [name], lambda: unadapted(input_ids=long_src))
    target = tiny.record_inputs(
        model.backbone, [name], lambda: model(input_ids=ids, attention_mask=mask, source_input_ids=long_src)
    )
    layer = model.backbone.get_submodule(name)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x_s, (x_t, y) = english[name][0], target[name]
    assert x_s.shape[1] == 9 and x_t.shape[1] == 5
    # left alignment: source positions 5..8 have no target partner and are dropped, which is
    # what pairing after padding both sides to a common length means
    with torch.no_grad():
        expected = layer.base_layer(x_t) + 2 * (x_s[:, :5] @ A.T + x_t @ A.T) @ B.T
    torch.testing.assert_close(y, expected)


def test_auto_alignment_is_right_for_decoders_and_left_for_encoders_whatever_the_batch():
    decoder = get_flare_model(tiny.llama(), FlareConfig())
    encoder = get_flare_model(tiny.xlmr_classifier(), FlareConfig())
    ids, _ = tiny.batch(1, 4, seed=0)
    decoder(input_ids=ids, source_input_ids=ids)
    encoder(input_ids=ids, source_input_ids=ids)
    assert decoder._side.right_aligned and not encoder._side.right_aligned
    padded, mask = tiny.batch(2, 4, seed=0, pad_right=1)
    decoder(input_ids=padded, attention_mask=mask, source_input_ids=padded.flip(1), source_attention_mask=mask.flip(1))
    assert decoder._side.right_aligned  # a right-padded batch does not flip it (that made rows batch-dependent)


def test_auto_alignment_warns_about_a_right_padded_english_side_on_decoders():
    decoder = get_flare_model(tiny.llama(), FlareConfig())
    ids, mask = tiny.batch(2, 4, seed=0, pad_right=1)
    with pytest.warns(UserWarning, match="right-padded"):
        decoder(input_ids=ids, source_input_ids=ids, source_attention_mask=mask)
    explicit = get_flare_model(tiny.llama(), FlareConfig(alignment="right"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        explicit(input_ids=ids, source_input_ids=ids, source_attention_mask=mask)
    assert not any("right-padded" in str(w.message) for w in seen)


def test_right_padded_mt_states_pair_with_a_left_padded_prompt():
    model = get_flare_model(tiny.llama(), FlareConfig(source_dim=8, fusion="add")).eval()
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 6, seed=0, pad_left=2)
    states = torch.randn(2, 4, 8)
    right_padded = torch.cat([states, torch.zeros(2, 3, 8)], 1)
    right_mask = torch.cat([torch.ones(2, 4), torch.zeros(2, 3)], 1).long()
    left_padded = torch.cat([torch.zeros(2, 3, 8), states], 1)
    left_mask = right_mask.flip(1)
    out_right = model(
        input_ids=ids, attention_mask=mask, source_states=right_padded, source_attention_mask=right_mask
    ).logits
    out_left = model(
        input_ids=ids, attention_mask=mask, source_states=left_padded, source_attention_mask=left_mask
    ).logits
    torch.testing.assert_close(out_right, out_left)
