"""How close two sets of sentence vectors are: the math of `flare analyze` (torch only).

Row i of `target` and row i of `english` are the same sentence in two languages (a parallel pair).
* `mean_pool`: a sentence vector is the mean of its real tokens' hidden states (padding excluded).
* `paired_cosine`: the mean cosine similarity of each sentence with its own translation.
* `retrieval_accuracy`: MEXA-style nearest-neighbour retrieval: the share of target sentences whose
  most cosine-similar English sentence (among all English sentences of the set) is their own
  translation, and the same from English to target. Ties go to the lowest index (torch.argmax), so
  a set of identical vectors retrieves only row 0 correctly, never "all of them".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, d) hidden states and a (B, L) mask of real tokens -> (B, d) means over the real tokens
    (float32). A row without real tokens has no meaning and is refused."""
    real = mask.to(torch.float32)
    counts = real.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("mean_pool: a row has no real token")
    return (hidden.float() * real[..., None]).sum(1) / counts[:, None]


def similarity_matrix(target: torch.Tensor, english: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarities: entry (i, j) is target i against English j."""
    if target.shape != english.shape or target.dim() != 2:
        raise ValueError(f"need two (N, d) matrices of one shape, got {tuple(target.shape)} and {tuple(english.shape)}")
    return F.normalize(target.float(), dim=-1) @ F.normalize(english.float(), dim=-1).T


def paired_cosine(target: torch.Tensor, english: torch.Tensor) -> float:
    """The mean cosine similarity of each target vector with its own English vector."""
    return float(similarity_matrix(target, english).diagonal().mean())


def retrieval_accuracy(target: torch.Tensor, english: torch.Tensor) -> tuple[float, float]:
    """(target->English, English->target) nearest-neighbour accuracy by cosine similarity."""
    similarity = similarity_matrix(target, english)
    truth = torch.arange(similarity.shape[0], device=similarity.device)
    to_english = (similarity.argmax(dim=1) == truth).float().mean()
    to_target = (similarity.argmax(dim=0) == truth).float().mean()
    return float(to_english), float(to_target)


def layer_alignment(target_layers: list[torch.Tensor], english_layers: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per layer (lists of (N, d) sentence vectors, one entry per layer): cosine and both retrievals."""
    rows = []
    for layer, (target, english) in enumerate(zip(target_layers, english_layers, strict=True)):
        to_english, to_target = retrieval_accuracy(target, english)
        rows.append({"layer": layer, "cosine": paired_cosine(target, english),
                     "retrieval_to_english": to_english, "retrieval_to_target": to_target})
    return rows
