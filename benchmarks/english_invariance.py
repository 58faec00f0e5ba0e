"""Is a row's English state a fixed function of its tokens? (issue 36: why the cache has a canonical layout)

    .venv/bin/python benchmarks/english_invariance.py                  # multilingual-e5-small, CPU fp32

One English pass over a batch of 16 random rows of lengths 10-64 padded to 64 (the reference),
then the same rows in other batch layouts; for each, the largest absolute difference of any real
token's recorded state (every fused module) from the reference. 0 means bit-identical.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from flare import FlareConfig, get_flare_model
from flare.hf.offline_e5 import model_location


def main() -> None:
    backbone = AutoModelForSequenceClassification.from_pretrained(model_location("multilingual-e5-small"), num_labels=3)
    model = get_flare_model(backbone, FlareConfig(task_type="SEQ_CLS", target_modules=["query", "value"]))
    rows, length = 16, 64
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 5000, (rows, length), generator=generator)
    lengths = torch.randint(10, length + 1, (rows,), generator=generator)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = ids * mask
    reference = model.english_states(ids, mask)

    def worst(states: dict, selected: torch.Tensor, columns: int) -> float:
        differences = [
            ((reference[name][selected, :columns] - states[name]) * mask[selected, :columns, None]).abs().max()
            for name in reference
        ]
        return float(max(differences))

    everything = torch.arange(rows)
    permuted = torch.randperm(rows, generator=generator)
    longest = int(lengths.max())
    cases = {
        "the same batch again": (everything, length),
        "rows permuted": (permuted, length),
        "rows 5-12 alone (8 rows)": (torch.arange(5, 13), length),
        "rows 0-2 alone (3 rows)": (torch.arange(0, 3), length),
        "row 0 alone": (torch.arange(0, 1), length),
        f"padded to the longest row ({longest}) instead of {length}": (everything, longest),
    }
    print("| layout of the English pass | max abs difference from the reference |")
    print("|---|---:|")
    for name, (selected, columns) in cases.items():
        states = model.english_states(ids[selected, :columns], mask[selected, :columns])
        print(f"| {name} | {worst(states, selected, columns):.3g} |")


if __name__ == "__main__":
    main()
