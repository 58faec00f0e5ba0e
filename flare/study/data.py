"""What a study's runs read: stage 1's English data, each target language's training, validation and
test pairs (split policy and limits), the English side a run is given (gold or a control,
flare/mt/english_side.py), a joint adapter's mix of languages (flare/study/sampling.py), a user's
own test file, and FLARE-MT's encoder states."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from flare.data.dataset_pairs import pairs_from_file
from flare.data.examples import Example, LoadStats, Pair
from flare.data.task_spec import Task
from flare.errors import FlareError
from flare.mt.encoder import MTEncoder, precompute_encoder_states
from flare.mt.english_side import english_examples, english_side
from flare.mt.translate import translate_columns
from flare.study.methods import METHODS
from flare.study.runs import Run
from flare.study.sampling import LanguageMix
from flare.study.settings import Study


class StudyData:
    """The data of one study, as its settings (`study.data`) select it."""

    def __init__(self, study: Study, task: Task, output_dir: Path) -> None:
        self.study, self.task, self.out = study, task, output_dir
        self.settings = study.data

    def _limit(self, items: list, limit: int) -> list:
        return items[:limit] if limit else items

    def english(self, pairs: list[Pair], side: str | None, seed: int, language: str) -> list[Pair]:
        """The English side `side` of (already limited) pairs, see flare/mt/english_side.py."""
        if side in (None, "gold"):
            return pairs
        return english_side(side, pairs, seed, language, self.settings.lexicon_dir, self.settings.data_dir)

    def splits(self, language: str | None) -> tuple[list, list]:
        """(train, validation) items: English examples for stage 1, pairs for a target language."""
        data = self.settings
        load: Callable[[str], list] = (
            (lambda split: self.task.load(split, self.task.source_language, data.data_dir))
            if language is None
            else lambda split: self.task.load_pairs(split, language, data.data_dir, data.translations_dir, data.source)
        )
        train = load(data.train_split)
        if data.valid_split:
            valid = load(data.valid_split)
        else:
            if not 0 < data.valid_size < len(train):
                raise FlareError(
                    f"data.valid_size: {data.valid_size} must be between 1 and the {len(train)} training rows"
                )
            train, valid = train[: -data.valid_size], train[-data.valid_size:]
        return self._limit(train, data.max_train), self._limit(valid, data.max_valid)

    def training(self, run: Run, languages: list[str]) -> tuple[list | LanguageMix, list]:
        """(train, validation) items of a trained run. A joint adapter's training items are a
        `LanguageMix` of its languages, each example with its own English side (and language, which
        FLARE-MT's tags read); its validation items are those of all its languages (never a held-out
        language's). Ids get their language in front, since parallel data share ids across languages."""
        def one(language: str) -> tuple[list, list]:
            side = None if METHODS[run.method].samples_english else run.train_english  # X-Mixup samples it
            train, valid = (self.english(items, side, run.seed, language) for items in self.splits(language))
            if METHODS[run.method].english_as_examples:
                train = train + english_examples(train)
            return train, valid

        if not run.joint:
            return one(run.language)
        pools, valid = {}, []
        for language in languages:
            train_items, valid_items = one(language)
            pools[language] = [_tagged(item, language) for item in train_items]
            valid += [_tagged(item, language) for item in valid_items]
        joint = self.study.joint
        return LanguageMix.build(pools, joint.sampling, joint.temperature, joint.epoch_size, run.seed), valid

    def test(self, language: str) -> tuple[list[Pair], LoadStats]:
        """Test pairs, and what loading them skipped (e.g. QA answers lost in translation)."""
        data, stats = self.settings, LoadStats()
        pairs = self.task.load_pairs(
            data.test_split, language, data.data_dir, data.translations_dir, data.source, stats=stats
        )
        return self._limit(pairs, data.max_test), stats

    def english_test(self) -> list[Example]:
        """Stage 1's English test examples (its score is printed, not recorded)."""
        data = self.settings
        return self._limit(self.task.load(data.test_split, self.task.source_language, data.data_dir), data.max_test)

    def test_file(self, path: Path, run: Run) -> list[Pair]:
        """The pairs of a user's test file; a missing English side is translated with mt_model."""
        study = self.study
        translate = None
        if study.mt_model:
            def translate(columns: list[list[str]]) -> list[list[str]]:
                return translate_columns(
                    columns, src_lang=run.language, tgt_lang=self.task.source_language, mt_model=study.mt_model,
                    cache_dir=self.out / "translations", device=study.device, dtype=study.dtype,
                    language_map=study.language_map,
                )

        pairs = pairs_from_file(self.task, path, run.language, METHODS[run.method].english_at_test, translate)
        return self._limit(pairs, self.settings.max_test)

    def mt_inputs(self, items: list) -> tuple[Callable[[list], dict], int]:
        """FLARE-MT: the MT encoder's states of the target text, each tagged with its own language,
        as extra model inputs, and their width. Every text is encoded once and kept in
        <output_dir>/mt_states (safetensors), shared by all seeds (keyed by the encoder's dtype too,
        as states computed in bfloat16 differ)."""
        encoder = mt_encoder(self.study)
        fields = self.task.text_fields

        def language(item: Pair | Example) -> str:
            return (item.target if isinstance(item, Pair) else item).language

        for code in dict.fromkeys(language(i) for i in items):
            store = precompute_encoder_states(encoder, [mt_text(i, fields) for i in items if language(i) == code],
                                              code, self.out / "mt_states", show_progress=False)

        def states(batch_items: list) -> dict:
            encoded, mask = store.get([mt_text(i, fields) for i in batch_items], [language(i) for i in batch_items])
            return {"source_states": encoded, "source_attention_mask": mask}

        return states, encoder.hidden_size


def mt_encoder(study: Study) -> MTEncoder:
    """FLARE-MT's encoder as a study's settings describe it: model, length, device, dtype, language tags."""
    return MTEncoder(study.mt_model, max_length=study.data.max_length, device=study.device, dtype=study.dtype,
                     language_map=study.language_map)


def mt_text(item: Pair | Example, fields: list[str]) -> str:
    """What FLARE-MT's encoder reads of an item: the target's text fields, in the task's order."""
    target = item.target if isinstance(item, Pair) else item
    return " ".join(target.fields[f] for f in fields)


def _tagged(item: Pair | Example, language: str) -> Pair | Example:
    """The item with `language/` in front of its ids (and its pair's)."""
    if isinstance(item, Pair):
        return replace(item, source=replace(item.source, id=f"{language}/{item.source.id}"),
                       target=replace(item.target, id=f"{language}/{item.target.id}"))
    return replace(item, id=f"{language}/{item.id}")


def check_joint_languages(run_dir: Path, languages: list[str]) -> None:
    """A saved joint adapter scores a language only for the set of languages it was trained on: a
    study that has since gained or lost a language would otherwise report an adapter trained
    without it (or with it) as trained with its current list."""
    path = run_dir / "trained.json"
    recorded = json.loads(path.read_text(encoding="utf-8")).get("joint_languages") if path.is_file() else None
    if recorded is not None and set(recorded) != set(languages):
        raise FlareError(
            f"{run_dir}: this joint adapter was trained on {', '.join(recorded)} but the study's languages make it "
            f"{', '.join(languages)}; use a new output_dir, or delete that folder to train it again"
        )
