"""The runs of a study: a run's label, folder and record id, and the plan (every run, in the order
a study makes them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flare.study.methods import METHODS
from flare.study.settings import Study


@dataclass(frozen=True)
class Run:
    """One training-and-scoring unit of a study: a method (with its fusion) on one target language
    and seed, with the English sides it trains and tests with; its record id and folder follow from
    these fields."""

    method: str
    fusion: str | None
    language: str
    seed: int
    train_english: str | None = None  # None: the method reads no English side at that stage
    test_english: str | None = None
    variant: str | None = None  # stage-2 settings that differ from the folder's study.yaml (a sweep point)
    # "per-language": an adapter of `language` alone; "joint": one adapter of all the study's languages,
    # scored here on `language`; "held-out": one of all the others, scored on `language` (never trained on)
    scope: Literal["per-language", "joint", "held-out"] = "per-language"

    @property
    def joint(self) -> bool:
        return self.scope != "per-language"

    @property
    def adapter_group(self) -> str:
        """The folder level between the run name and the seed: the language of a per-language
        adapter, or the joint adapter's (shared by the runs that score it on each language)."""
        return {"per-language": self.language, "joint": "joint"}.get(self.scope, f"joint-without-{self.language}")

    def trained_languages(self, languages: list[str]) -> list[str]:
        """The languages the run's adapter is trained on, given the study's."""
        if self.scope == "joint":
            return list(languages)
        if self.scope == "held-out":
            return [language for language in languages if language != self.language]
        return [self.language]

    @property
    def name(self) -> str:
        """The trained run's folder name: one per English training side (test sides share it) and
        stage-2 variant."""
        name = f"{self.method}-{self.fusion}" if self.fusion else self.method
        if self.train_english not in (None, "gold"):
            name = f"{name}+train-{self.train_english}"
        if self.variant and METHODS[self.method].trains:
            name = f"{name}+stage2-{self.variant.replace('=', '-').replace(',', '+')}"
        return name

    def folder(self, output_dir: str | Path) -> Path:
        """Where the run keeps its logs, checkpoint and adapter in a study folder."""
        return Path(output_dir) / "runs" / self.name / self.adapter_group / f"seed{self.seed}"

    def record_id(self, task: str) -> str:
        """The run's id in results.jsonl (`run_id`): what a rerun looks up to skip recorded work."""
        return f"{task}/{self.key}"

    @property
    def key(self) -> str:
        """The record's id within a task; gold English sides keep the ids of studies made before the
        English-side settings existed."""
        test = "" if self.test_english in (None, "gold") else f"/test-{self.test_english}"
        joint = f"{self.adapter_group}/" if self.joint else ""
        return f"{self.name}/{joint}{self.language}/seed{self.seed}{test}"

    @property
    def label(self) -> str:
        label = METHODS[self.method].run_label(self.fusion)
        sides = {"per-language": [], "joint": ["joint"], "held-out": ["joint, held out"]}[self.scope]
        sides += [f"{stage} {side}" for stage, side in (("train", self.train_english), ("test", self.test_english))
                  if side not in (None, "gold")]
        if self.variant and METHODS[self.method].trains:
            sides.append(f"stage2 {self.variant}")
        return f"{label} [{', '.join(sides)}]" if sides else label


def plan(study: Study, variant: str | None = None) -> list[Run]:
    """Every run of the study, seed by seed and language by language, so that an interrupted
    study has complete comparisons for the seeds it finished. Zero-shot and translate-test train
    nothing: one seed suffices. Each English side a method reads (data.train_english /
    data.test_english) is a run of its own. Trained methods get per-language and/or joint adapters
    (joint.training), scored on every language, and leave-one-out adapters (joint.held_out), scored
    on their held-out language."""
    runs = []
    for seed in study.seeds:
        for language in study.languages:
            for name in study.methods:
                method = METHODS[name]
                if not method.trains and seed != study.seeds[0]:
                    continue
                scopes = ["per-language"]
                if method.trains:
                    scopes = [scope for scope in ("per-language", "joint") if scope in study.joint.training]
                    scopes += ["held-out"] if language in study.joint.held_out else []
                fusions = study.fusions if method.fused else [None]
                trains = study.data.train_english if method.english_in_training else [None]
                tests = study.data.test_english if method.english_at_test else [None]
                runs += [Run(name, fusion, language, seed, train, test, variant, scope)
                         for scope in scopes for fusion in fusions for train in trains for test in tests]
    return runs

