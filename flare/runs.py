"""The runs of a study: each method's label and input view, a run's folder name and record id,
and the plan (every run, in the order a study makes them)."""

from __future__ import annotations

from dataclasses import dataclass

from flare.settings import Study

LABELS = {"zero-shot": "zero-shot", "translate-test": "translate-test", "translate-train": "translate-train (LoRA)",
          "translate-train+english": "translate-train + English (LoRA)", "input-fusion": "input-level fusion"}
VIEWS = {"zero-shot": "target", "translate-test": "source", "translate-train": "target", "input-fusion": "input_fusion",
         "flare": "flare", "flare-mt": "target", "translate-train+english": "target"}
# Which English sides a method reads (data.train_english / data.test_english): each side is a run of its own.
TRAINS_ON_ENGLISH = ("translate-train+english", "input-fusion", "flare")
TESTS_ON_ENGLISH = ("translate-test", "input-fusion", "flare")


@dataclass(frozen=True)
class Run:
    method: str
    fusion: str | None
    language: str
    seed: int
    train_english: str | None = None  # None: the method reads no English side at that stage
    test_english: str | None = None

    @property
    def name(self) -> str:
        """The trained run's folder name: one per English training side (test sides share it)."""
        name = f"{self.method}-{self.fusion}" if self.fusion else self.method
        return name if self.train_english in (None, "gold") else f"{name}+train-{self.train_english}"

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
        return f"{label} [{', '.join(sides)}]" if sides else label


def plan(study: Study) -> list[Run]:
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
                runs += [Run(method, fusion, language, seed, train, test)
                         for fusion in fusions for train in trains for test in tests]
    return runs
