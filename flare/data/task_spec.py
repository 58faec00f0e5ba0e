"""What a task is: its languages, labels, splits, input templates and metrics, and how it loads
examples and English-target pairs from local files (the layouts of the project's `data/` folder),
from translation files, or, for built-in tasks whose local files are absent, from the Hugging Face
Hub. The tasks themselves (built-in and custom) are made in flare/data/tasks.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flare.data.examples import (
    ColumnSpec,
    Example,
    LoadStats,
    Pair,
    examples_from_records,
    read_nusax_csv,
    read_records,
    read_squad_json,
    read_xnli_tsv,
)
from flare.data.hub import load_dataset_rows, load_from_hub
from flare.data.locations import DATA_DIR_ENV
from flare.data.parallel_data import pair_gold, pair_machine, read_translations, translation_path
from flare.errors import FlareError

QA_METRICS = ["exact_match", "f1", "exact_match_paper_compat"]


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt is `body`, then `cue` (the words the answer follows, e.g. "Label:"). Keeping them
    apart lets input-level fusion put the English body and the target body before one cue."""

    body: str
    cue: str = ""


@dataclass
class Task:
    """A task: its languages, splits and labels, how its files are read, and how each model family
    sees an example (encoder fields, decoder and seq2seq prompts, verbalizer). Built-in tasks live in
    flare/data/tasks.py; a user's own come from a task YAML (flare/data/custom_task.py)."""

    name: str
    type: Literal["classification", "qa"]
    languages: list[str]
    source_language: str
    labels: list[str]
    metric: str
    metrics: list[str]
    text_fields: list[str]
    splits: dict[str, list[str]]  # language -> splits that exist for it
    split_roles: dict[str, str | None]  # "train" / "validation" / "test" -> split name
    encoder_fields: list[str]  # one field (single text) or two (text pair), in tokenizer order
    decoder_prompt: PromptTemplate
    seq2seq_prompt: PromptTemplate
    verbalizer: list[str]  # answer word per label (decoders, mT5)
    parallel: bool = False  # gold parallel data across languages
    pair_by: Literal["id", "row"] = "id"
    reader: Literal["xnli", "nusax", "tydiqa", "custom"] = "custom"  # which reader loads its files
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # custom: split -> language -> file
    columns: ColumnSpec | None = None
    label_map: dict[str, str] | None = None
    # a user's metric (custom tasks): (predictions, references) -> score in 0..100, named `metric`
    metric_function: Callable[[list, list], float] | None = None
    dataset: dict[str, Any] | None = None  # custom: datasets.load_dataset arguments instead of files

    @property
    def target_languages(self) -> list[str]:
        return [lang for lang in self.languages if lang != self.source_language]

    def check_language(self, language: str) -> None:
        if language not in self.languages:
            raise FlareError(f"task {self.name} has no language '{language}' (languages: {', '.join(self.languages)})")

    def check_split(self, split: str, language: str) -> None:
        self.check_language(language)
        if split not in self.splits.get(language, []):
            raise FlareError(
                f"task {self.name} has no split '{split}' for {language} "
                f"(available: {', '.join(self.splits.get(language, [])) or 'none'})"
            )

    # --- loading ---------------------------------------------------------------------------------

    def local_path(self, split: str, language: str, data_dir: str | Path | None = None) -> Path | None:
        """The local file holding (split, language), or None when it is not on disk."""
        if self.reader == "custom":
            path = self.files.get(split, {}).get(language)
            return path if path is not None and path.is_file() else None
        root = data_root(data_dir)
        if root is None:
            return None
        if not root.is_dir():  # a typo must not turn into a (slow, offline: failing) Hub download
            raise FlareError(f"data_dir {root} is not a directory")
        if self.reader == "xnli":
            candidates = [root / "xnli" / "test-labeled" / f"test-{language}.tsv"] if split == "test" else []
            candidates.append(root / "xnli" / f"{split}-{language}.tsv")
        elif self.reader == "nusax":
            candidates = [root / "nusax-senti" / language / f"{split}.csv"]
        else:
            candidates = [root / "tydiqa-goldp" / language / f"{split}.json"]
        return next((path for path in candidates if path.is_file()), None)

    def load(
        self, split: str, language: str, data_dir: str | Path | None = None, stats: LoadStats | None = None
    ) -> list[Example]:
        """Examples of one split in one language. Pass `stats` to learn what was skipped."""
        self.check_split(split, language)
        path = self.local_path(split, language, data_dir)
        if self.dataset is not None:
            rows, columns, source = load_dataset_rows(self.dataset, split, language)
            examples = examples_from_records(
                rows, columns, Path(source), language, self.columns, self.type, self.labels, self.label_map, stats
            )
        elif path is None:
            if self.reader == "custom":
                raise FlareError(
                    f"task {self.name}: file for split '{split}', language '{language}' not found: "
                    f"{self.files.get(split, {}).get(language)}"
                )

            examples = load_from_hub(self.name, split, language, self.labels, stats)
        elif self.reader == "xnli":
            examples = read_xnli_tsv(path, language, self.labels)
        elif self.reader == "nusax":
            examples = read_nusax_csv(path, language, self.labels)
        elif self.reader == "tydiqa" or path.suffix.lower() == ".json":
            examples = read_squad_json(path, language, stats)
        else:
            rows, columns = read_records(path)
            examples = examples_from_records(
                rows, columns, path, language, self.columns, self.type, self.labels, self.label_map, stats
            )
        if not examples:
            raise FlareError(f"task {self.name}: {path or 'hub'} has no usable examples for {split}/{language}")
        if stats is not None:
            stats.examples += len(examples)
        return examples

    def load_pairs(
        self,
        split: str,
        language: str,
        data_dir: str | Path | None = None,
        translations_dir: str | Path | None = None,
        source: Literal["gold", "machine", "auto"] = "auto",
        machine_side: Literal["source", "target"] | None = None,
        stats: LoadStats | None = None,
    ) -> list[Pair]:
        """English-target pairs for one split. "gold" uses human-parallel files (verified: same
        count, ids and labels); "machine" uses translation files; "auto" prefers gold.

        For machine pairs, `machine_side` says which side is translated. By default the test split
        keeps the original target and reads its translation into English (translate-test, as
        FLARE evaluates), and other splits keep the original English and read its translation
        into the target (translate-train, so no target-language gold labels are used)."""
        self.check_language(language)
        english = self.source_language
        if language == english:
            raise FlareError(f"task {self.name}: pairs need a target language other than the source '{english}'")
        has_source = split in self.splits.get(english, [])
        has_target = split in self.splits.get(language, [])
        gold_possible = self.parallel and has_source and has_target
        if source == "auto":
            source = "gold" if gold_possible else "machine"
        if source == "gold":
            if not gold_possible:
                raise FlareError(
                    f"task {self.name} has no gold parallel {split} data for {english}-{language}; use source='machine'"
                )
            sources = self.load(split, english, data_dir)
            targets = self.load(split, language, data_dir)
            pairs = pair_gold(
                sources, targets,
                str(self.local_path(split, english, data_dir) or "hub"),
                str(self.local_path(split, language, data_dir) or "hub"),
                by=self.pair_by, check_labels=self.type == "classification",
            )
        elif source == "machine":
            side = machine_side or self._default_machine_side(split, has_source, has_target)
            original_lang, translated_lang = (english, language) if side == "target" else (language, english)
            if translations_dir is None:
                raise FlareError(f"task {self.name}: machine pairs for {split}/{language} need a translations_dir")
            originals = self.load(split, original_lang, data_dir)
            path = translation_path(translations_dir, self.name, split, original_lang, translated_lang)
            pairs = pair_machine(
                originals, read_translations(path), path, translated_lang, side, self.text_fields, self.type == "qa",
                stats,
            )
        else:
            raise FlareError(f"source must be 'gold', 'machine' or 'auto', got {source!r}")
        if not pairs:
            raise FlareError(f"task {self.name}: no usable {split} pairs for {english}-{language}")
        return pairs

    def _default_machine_side(self, split: str, has_source: bool, has_target: bool) -> str:
        if has_target and (split == self.split_roles.get("test") or not has_source):
            return "source"
        if has_source:
            return "target"
        raise FlareError(f"task {self.name}: split '{split}' exists in neither the source nor the target language")


def data_root(data_dir: str | Path | None) -> Path | None:
    """The dataset root: the argument, else $FLARE_DATA_DIR, else None (Hub only)."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None
