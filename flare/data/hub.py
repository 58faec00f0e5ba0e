"""Fallback: the official Hugging Face Hub datasets, used only when the local files are absent.

Kept apart from the local readers because it needs a network and cannot be tested offline. The
rows go through the same validation as local files, so both sources give identical Examples.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from flare.data.examples import Example, LoadStats, check_answers, label_index, require_text
from flare.data.locations import HOW_TO_SET
from flare.errors import FlareError

# Our split names -> the Hub's split names.
_HUB_SPLITS = {"train": "train", "dev": "validation", "valid": "validation", "test": "test"}

# TyDiQA-GoldP ids start with the language name ("english-..."); the secondary task mixes all.
TYDIQA_PREFIX = {
    "ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
    "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu",
}


def check_hub_reachable(what: str) -> None:
    """Fail at once, naming FLARE_DATA_DIR, when the Hub's host does not even resolve: the Hub
    client would otherwise retry for half a minute before failing the same way. Skipped where a
    proxy resolves names or the Hub is used offline from its cache."""
    if any(os.environ.get(name) for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy")):
        return
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise FlareError(
            f"{what}: not on disk, and the Hugging Face Hub ({host}) cannot be reached; {HOW_TO_SET}"
        ) from None


def _load(path: str, config: str | None, split: str):
    check_hub_reachable(f"the Hub dataset {path}/{config} split {split}")
    try:
        from datasets import load_dataset  # seconds to import; `flare --help` reads this module's task list

        return load_dataset(path, config, split=_HUB_SPLITS.get(split, split))
    except Exception as err:  # any Hub/network failure becomes one clear line
        raise FlareError(
            f"local files missing and the Hub dataset {path}/{config} split {split} could not be loaded: "
            f"{type(err).__name__}; {HOW_TO_SET}"
        ) from None


def load_dataset_rows(arguments: dict[str, Any], split: str, language: str) -> tuple[list[dict], list[str], str]:
    """Rows and column names of one (split, language) of a custom task declared with `dataset:`
    (`datasets.load_dataset` arguments; {language} and {split} are filled in)."""
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{language}", language).replace("{split}", split)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    filled = {key: fill(value) for key, value in arguments.items()}
    filled.setdefault("split", split)
    name = f"/{filled['name']}" if filled.get("name") else ""
    where = f"dataset {filled['path']}{name} split {filled['split']}"
    try:
        from datasets import load_dataset  # seconds to import; `flare --help` reads this module's task list

        rows = load_dataset(**filled)
    except Exception as err:  # a missing dataset, split or file, or no network: one line
        message = " ".join(str(err).split())[:200]
        raise FlareError(f"{where} could not be loaded: {type(err).__name__}: {message}") from None
    return [dict(row) for row in rows], list(rows.column_names), where


def load_from_hub(
    task_name: str, split: str, language: str, labels: Sequence[str], stats: LoadStats | None = None
) -> list[Example]:
    """Examples of a built-in task from the Hub, in the same form as the local readers give."""
    if task_name == "xnli":
        rows = _load("facebook/xnli", language, split)
        names = rows.features["label"].names  # ClassLabel: entailment, neutral, contradiction
        out = []
        for number, row in enumerate(rows):
            where = f"hub facebook/xnli/{language}/{split}: row {number + 1}"
            fields = {k: require_text(row[k], where, k) for k in ("premise", "hypothesis")}
            out.append(Example(str(number), language, fields, label_index(names[row["label"]], labels, where)))
        return out
    if task_name == "nusax":
        rows = _load("indonlp/NusaX-senti", language, split)
        names = rows.features["label"].names
        out = []
        for number, row in enumerate(rows):
            where = f"hub indonlp/NusaX-senti/{language}/{split}: row {number + 1}"
            label = row["label"]
            label = names[label] if isinstance(label, int) else label
            fields = {"text": require_text(row["text"], where, "text")}
            out.append(Example(str(row["id"]), language, fields, label_index(label, labels, where)))
        return out
    if task_name == "tydiqa":
        rows = _load("google-research-datasets/tydiqa", "secondary_task", split)
        prefix = TYDIQA_PREFIX[language] + "-"
        out = []
        for row in rows:
            if not row["id"].startswith(prefix):
                continue
            where = f"hub tydiqa/secondary_task/{split}: question {row['id']}"
            fields = {k: require_text(row[k], where, k) for k in ("question", "context")}
            if not row["answers"]["text"]:
                if stats is not None:
                    stats.skip("no_answer")
                continue
            out.append(
                Example(row["id"], language, fields, None, check_answers(row["answers"], fields["context"], where))
            )
        return out
    raise FlareError(f"task {task_name!r} has no Hub source")
