"""The fusions on bottlenecks: which side asks, which side answers, padding never answers, and
with causal=True no position reads a later one."""

import pytest
import torch

from flare.adapter.config import FUSIONS
from flare.adapter.fusion import CrossAttentionFusion, fuse, make_fusion_module


def _pair(queries_from: str, heads: int = 2, r: int = 8) -> tuple[CrossAttentionFusion, CrossAttentionFusion]:
    torch.manual_seed(0)
    paper = CrossAttentionFusion(r, heads, 0.0, queries="source")
    other = CrossAttentionFusion(r, heads, 0.0, queries=queries_from)
    other.load_state_dict(paper.state_dict())
    return paper, other


def _module(fusion: str):
    torch.manual_seed(0)
    return make_fusion_module(fusion, 8, 2, 0.0)


IDENTITY = torch.arange(5).expand(2, 5)  # position i pairs with source position i


def test_target_queries_is_the_paper_fusion_with_the_roles_swapped():
    paper, swapped = _pair("target")
    S, T = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    s_mask, t_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), torch.tensor([[1, 1, 1, 1, 0], [1] * 5])
    out = fuse("cross_attention_target_queries", S, T, IDENTITY, t_mask, s_mask, module=swapped)
    torch.testing.assert_close(out, fuse("cross_attention", T, S, IDENTITY, s_mask, t_mask, module=paper))
    assert not torch.allclose(out, fuse("cross_attention", S, T, IDENTITY, t_mask, s_mask, module=paper))


@pytest.mark.parametrize("fusion", ["matmul", "cross_attention", "cross_attention_target_queries"])
def test_masked_keys_change_nothing_and_real_keys_do(fusion):
    module = _module(fusion)
    S, T = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    key_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    index = torch.arange(6)[None]
    target_keyed = fusion != "cross_attention_target_queries"

    def out(keys):  # the keys' side is T for the target-keyed fusions and S for target queries
        if target_keyed:
            return fuse(fusion, S, keys, index, target_keys=key_mask, module=module)[:, :4]
        return fuse(fusion, keys, T, index, source_keys=key_mask, module=module)

    keys = T if target_keyed else S
    at_padding, at_real = keys.clone(), keys.clone()
    at_padding[:, 4:] += 5.0
    at_real[:, 1:2] += 5.0
    torch.testing.assert_close(out(keys), out(at_padding))
    assert not torch.allclose(out(keys), out(at_real))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_causal_fusion_never_reads_a_later_position(fusion):
    module = _module(fusion)
    S, T = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    index = torch.arange(6).expand(2, 6)
    out = fuse(fusion, S, T, index, causal=True, module=module)
    later_S, later_T = S.clone(), T.clone()
    later_S[:, 4:] += 3.0
    later_T[:, 4:] += 3.0
    changed = fuse(fusion, later_S, later_T, index, causal=True, module=module)
    torch.testing.assert_close(out[:, :4], changed[:, :4])
    assert not torch.allclose(out[:, 4:], changed[:, 4:])
    if fusion not in ("add", "mul", "add_relu"):  # the non-causal form reads later positions
        assert not torch.allclose(
            fuse(fusion, S, T, index, module=module)[:, :4], fuse(fusion, later_S, later_T, index, module=module)[:, :4]
        )


def test_causal_matmul_is_a_prefix_sum():
    S, T = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    out = fuse("matmul", S, T, torch.arange(5)[None], causal=True)
    for i in range(5):
        expected = S[0, i] @ (T[0, : i + 1].T @ T[0, : i + 1])
        torch.testing.assert_close(out[0, i], expected)


def test_target_queries_keys_are_every_real_source_position_up_to_the_partner():
    module = _module("cross_attention_target_queries")
    S, T = torch.randn(1, 7, 8), torch.randn(1, 3, 8)
    index = torch.tensor([[2, 3, 4]])  # three target positions paired with source 2..4
    out = fuse("cross_attention_target_queries", S, T, index, module=module)
    # not causal: all seven source positions answer, not only the three paired ones
    torch.testing.assert_close(out, module(T, S))
    causal = fuse("cross_attention_target_queries", S, T, index, causal=True, module=module)
    torch.testing.assert_close(causal[:, 0], module(T[:, :1], S[:, :3])[:, 0])


@pytest.mark.parametrize("fusion", ["cross_attention", "cross_attention_target_queries"])
def test_a_row_without_real_keys_stays_finite_forward_and_backward(fusion):
    module = make_fusion_module(fusion, 8, 1, 0.0)
    S = torch.randn(2, 4, 8, requires_grad=True)
    T = torch.randn(2, 4, 8, requires_grad=True)
    none = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]])  # row 0: nothing to attend to
    out = fuse(fusion, S, T, torch.arange(4).expand(2, 4), none, none, module=module)
    assert torch.isfinite(out).all()
    out[1].sum().backward()  # the caller keeps only rows with real partners
    assert torch.isfinite(S.grad).all() and torch.isfinite(T.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_only_the_cross_attention_fusions_have_weights():
    assert make_fusion_module("cross_attention", 8, 2, 0.0).queries == "source"
    assert make_fusion_module("cross_attention_target_queries", 8, 2, 0.0).queries == "target"
    assert all(make_fusion_module(f, 8, 1, 0.0) is None for f in ("add", "mul", "add_relu", "matmul"))
