"""The runs of a study: each method's label and input view, a run's folder name and record id,
and the plan (every run, in the order a study makes them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flare.errors import FlareError
from flare.settings import Study, from_dict, read_study_yaml, stage2_variant

LABELS = {"zero-shot": "zero-shot", "translate-test": "translate-test", "translate-train": "translate-train (LoRA)",
          "translate-train+english": "translate-train + English (LoRA)", "input-fusion": "input-level fusion"}
VIEWS = {"zero-shot": "target", "translate-test": "source", "translate-train": "target", "input-fusion": "input_fusion",
         "flare": "flare", "flare-mt": "target", "translate-train+english": "target"}
# Which English sides a method reads (data.train_english / data.test_english): each side is a run of its own.
TRAINS_ON_ENGLISH = ("translate-train+english", "input-fusion", "flare")
TESTS_ON_ENGLISH = ("translate-test", "input-fusion", "flare")
UNTRAINED = ("zero-shot", "translate-test")  # they use the stage-1 model as it is: stage 2 never touches them


@dataclass(frozen=True)
class Run:
    method: str
    fusion: str | None
    language: str
    seed: int
    train_english: str | None = None  # None: the method reads no English side at that stage
    test_english: str | None = None
    variant: str | None = None  # stage-2 settings that differ from the folder's study.yaml (a sweep point)

    @property
    def name(self) -> str:
        """The trained run's folder name: one per English training side (test sides share it) and
        stage-2 variant."""
        name = f"{self.method}-{self.fusion}" if self.fusion else self.method
        if self.train_english not in (None, "gold"):
            name = f"{name}+train-{self.train_english}"
        if self.variant and self.method not in UNTRAINED:
            name = f"{name}+stage2-{self.variant.replace('=', '-').replace(',', '+')}"
        return name

    def folder(self, output_dir: str | Path) -> Path:
        """Where the run keeps its logs, checkpoint and adapter in a study folder."""
        return Path(output_dir) / "runs" / self.name / self.language / f"seed{self.seed}"

    @property
    def key(self) -> str:
        """The record's id within a task; gold English sides keep the ids of studies made before the
        English-side settings existed."""
        test = "" if self.test_english in (None, "gold") else f"/test-{self.test_english}"
        return f"{self.name}/{self.language}/seed{self.seed}{test}"

    @property
    def label(self) -> str:
        if self.method == "flare":
            label = f"FLARE ({self.fusion})"
        elif self.method == "flare-mt":
            label = f"FLARE-MT ({self.fusion})"
        else:
            label = LABELS[self.method]
        sides = [f"{stage} {side}" for stage, side in (("train", self.train_english), ("test", self.test_english))
                 if side not in (None, "gold")]
        if self.variant and self.method not in UNTRAINED:
            sides.append(f"stage2 {self.variant}")
        return f"{label} [{', '.join(sides)}]" if sides else label


def plan(study: Study, variant: str | None = None) -> list[Run]:
    """Every run of the study, seed by seed and language by language, so that an interrupted
    study has complete comparisons for the seeds it finished. Zero-shot and translate-test train
    nothing: one seed suffices."""
    runs = []
    for seed in study.seeds:
        for language in study.languages:
            for method in study.methods:
                if method in ("zero-shot", "translate-test") and seed != study.seeds[0]:
                    continue
                fusions = study.fusions if method in ("flare", "flare-mt") else [None]
                trains = study.data.train_english if method in TRAINS_ON_ENGLISH else [None]
                tests = study.data.test_english if method in TESTS_ON_ENGLISH else [None]
                runs += [Run(method, fusion, language, seed, train, test, variant)
                         for fusion in fusions for train in trains for test in tests]
    return runs


def recorded_study(output_dir: str | Path) -> dict[str, Any] | None:
    """The study.yaml settings of a folder that holds runs or a stage-1 model (None: a new folder)."""
    out = Path(output_dir)
    recorded = out / "study.yaml"
    if not recorded.is_file() or not ((out / "results.jsonl").is_file() or (out / "stage1").is_dir()):
        return None
    return read_study_yaml(recorded)


def folder_variant(study: Study) -> str | None:
    """The stage-2 sweep point that `study`'s runs belong to in its output folder: the stage-2
    settings that differ from the folder's study.yaml (None: the folder's own settings)."""
    recorded = recorded_study(study.output_dir)
    if recorded is None:
        return None
    try:
        return stage2_variant(from_dict(Study, recorded), study)
    except FlareError as error:
        raise FlareError(f"{Path(study.output_dir) / 'study.yaml'}: {error}") from None
