"""The cross-attention fusions: which side asks, which side answers, and padding never answers."""

import pytest
import torch

from flare.adapter.fusion import CrossAttentionFusion, fuse, make_fusion_module


def _pair(queries_from: str, heads: int = 2, r: int = 8) -> tuple[CrossAttentionFusion, CrossAttentionFusion]:
    torch.manual_seed(0)
    paper = CrossAttentionFusion(r, heads, 0.0, queries="source")
    other = CrossAttentionFusion(r, heads, 0.0, queries=queries_from)
    other.load_state_dict(paper.state_dict())
    return paper, other


def test_target_queries_is_the_paper_fusion_with_the_roles_swapped():
    paper, swapped = _pair("target")
    S, T = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    s_mask, t_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), torch.tensor([[1, 1, 1, 1, 0], [1] * 5])
    torch.testing.assert_close(swapped(S, T, t_mask, s_mask), paper(T, S, s_mask, t_mask))
    assert not torch.allclose(swapped(S, T, t_mask, s_mask), paper(S, T, t_mask, s_mask))


@pytest.mark.parametrize("queries", ["source", "target"])
def test_masked_keys_change_nothing_and_real_keys_do(queries):
    module = _pair(queries)[1]
    S, T = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    key_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])

    def out(keys):  # the keys' side is T for the paper's fusion and S for target queries
        if queries == "source":
            return module(S, keys, key_mask, None)
        return module(keys, T, None, key_mask)

    keys = T if queries == "source" else S
    at_padding, at_real = keys.clone(), keys.clone()
    at_padding[:, 4:] += 5.0
    at_real[:, :1] += 5.0
    torch.testing.assert_close(out(keys), out(at_padding))
    assert not torch.allclose(out(keys), out(at_real))


@pytest.mark.parametrize("fusion", ["cross_attention", "cross_attention_target_queries"])
def test_a_row_without_real_keys_stays_finite_forward_and_backward(fusion):
    module = make_fusion_module(fusion, 8, 1, 0.0)
    S = torch.randn(2, 4, 8, requires_grad=True)
    T = torch.randn(2, 4, 8, requires_grad=True)
    none = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]])  # row 0: nothing to attend to
    out = fuse(fusion, S, T, target_mask=none, module=module, source_mask=none)
    assert torch.isfinite(out).all()
    out[1].sum().backward()  # the caller keeps only rows with real partners
    assert torch.isfinite(S.grad).all() and torch.isfinite(T.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_only_the_cross_attention_fusions_have_weights():
    assert make_fusion_module("cross_attention", 8, 2, 0.0).queries == "source"
    assert make_fusion_module("cross_attention_target_queries", 8, 2, 0.0).queries == "target"
    assert all(make_fusion_module(f, 8, 1, 0.0) is None for f in ("add", "mul", "add_relu", "matmul"))
