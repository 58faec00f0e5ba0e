"""The model card (README.md) of a saved FLARE adapter: what PEFT's placeholder card cannot say —
that the adapter needs the English side at inference, and how to pass it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from flare.errors import FlareError


def check_card_inputs(languages: Any, scores: Any) -> None:
    """languages: a list of language codes; scores: {name: number}. Checked before any work."""
    if languages is not None and (
        isinstance(languages, str) or not all(isinstance(code, str) and code.strip() for code in languages)
    ):
        raise FlareError(f"languages must be a list of language codes, got {languages!r}")
    if scores is not None:
        if not isinstance(scores, dict):
            raise FlareError(f"scores must be a dict of name -> number, got {type(scores).__name__}")
        for name, value in scores.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise FlareError(f"scores must map names to finite numbers; {name!r}: {value!r} is not")


def model_card(
    base_model: str | None, architecture: str, flare_config: dict[str, Any], fused_modules: list[str],
    adapter_name: str, languages: list[str] | None = None, scores: dict[str, float] | None = None,
) -> str:
    """README.md text: Hub metadata (library, base model, languages, tags), what the adapter
    fuses, how to load and call it with the English side, its settings and the scores given."""
    metadata: dict[str, Any] = {"library_name": "peft", "tags": ["flare", "lora", "peft", "cross-lingual-transfer"]}
    if base_model:
        metadata["base_model"] = base_model
    if languages:
        metadata["language"] = list(languages)
    fusion = flare_config["fusion"]
    source = (
        f"external states of width {flare_config['source_dim']} (FLARE-MT), through a trained projection"
        if flare_config.get("source_dim") else "the English translation of the input, run through the same frozen base"
    )
    base = base_model or "the base model it was trained on"
    lines = [
        "---", yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip(), "---", "",
        "# FLARE adapter", "",
        f"A FLARE (Borchert et al., ACL 2025) LoRA adapter for `{base}`, made with flare-xlt. "
        f"In {len(fused_modules)} fused modules the LoRA bottleneck combines the input with {source} "
        f"(fusion `{fusion}`, rank {flare_config['r']}, alpha {flare_config['lora_alpha']}); every other "
        "LoRA module is plain LoRA.",
    ]
    if languages:
        lines += ["", f"Languages: {', '.join(languages)}."]
    lines += [
        "", "## Use", "",
        "The adapter needs the English side at inference. Loaded with plain PEFT it runs as plain LoRA, "
        "without the fusion it was trained with.", "",
        "```python",
        "import flare",
        f"from transformers import {architecture}",
        "",
        f'base = {architecture}.from_pretrained("{base}")',
        'model = flare.load_flare_model(base, "<this repo id or folder>")',
        "out = model(input_ids=target_ids, attention_mask=target_mask,          # the input in its language",
    ]
    if flare_config.get("source_dim"):
        lines.append("            source_states=english_states, source_attention_mask=english_mask)  # MT states")
    else:
        lines.append("            source_input_ids=english_ids, source_attention_mask=english_mask)  # its English")
    lines += ["```", "", f"Adapter name: `{adapter_name}`. FLARE settings:", "", "```json"]
    lines += [json.dumps(flare_config, indent=2), "```"]
    if scores:
        lines += ["", "## Scores", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {name} | {value:g} |" for name, value in scores.items()]
    return "\n".join(lines) + "\n"



def card_languages(directory: str | Path) -> list[str] | None:
    """The languages a saved adapter's card (README.md) lists in its metadata; None when it has no
    card or lists none (an adapter saved without them)."""
    card = Path(directory) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return None
    try:
        metadata = yaml.safe_load(text[4:text.index("\n---", 4)])
    except yaml.YAMLError:
        return None
    languages = metadata.get("language") if isinstance(metadata, dict) else None
    if isinstance(languages, str):
        return [languages]
    return [str(code) for code in languages] if isinstance(languages, list) and languages else None
