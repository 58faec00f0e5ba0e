"""The study: stage 1 (English task fine-tuning, merged), then every method x target language x
seed, each run written as one record to results.jsonl as soon as it finishes. A rerun skips what
is already recorded, reuses the stage-1 model, and continues interrupted training runs from their
last epoch checkpoint.

Layout of `output_dir`: study.yaml (the settings used), stage1/model (merged English task model),
stage1/run (its logs and checkpoint), runs/<method>/<language>/seed<k>/ (logs, checkpoint,
adapter), results.jsonl, and the report (results.csv/.md/.png); .flare.lock names the command
that holds the folder while one runs (a second one is refused).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from flare.adapter import load_flare_model
from flare.checks import check_checkpoint, check_model
from flare.data import Example, LoadStats, Pair
from flare.dataset_pairs import pairs_from_file
from flare.device import resolve_placement
from flare.english_side import english_examples, english_side
from flare.errors import FlareError
from flare.evaluate import evaluate, predict, score
from flare.files import append_line, folder_lock, write_atomically
from flare.formats import FormatSettings, PairFormatter, input_length
from flare.methods import METHODS, reads_english
from flare.modeling import adapt, flare_config, load_backbone, merge_and_save
from flare.predict import english_side as machine_english
from flare.runs import Run, folder_variant, plan, recorded_study
from flare.settings import Study, changed_settings, from_dict, read_study_yaml, study_to_dict
from flare.tasks import Task, get_task
from flare.train import fit


def quiet_libraries() -> None:
    """Keep the terminal for progress and results: no weight-loading reports or deprecation noise."""
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # per-run "Loading weights" bars; ours are plain tqdm
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)


class Pipeline:
    """Runs a study; the public entry point is `compare`."""

    def __init__(self, study: Study) -> None:
        self.study = study.validate()
        self.placement = resolve_placement(study.device, study.dtype, study.load_in_4bit)
        self.task: Task = get_task(study.task)
        self.out = Path(study.output_dir)
        self.format = FormatSettings(max_length=study.data.max_length)
        self.results_path = self.out / "results.jsonl"

    # ----------------------------------------------------------------- data

    def _limit(self, items: list, limit: int) -> list:
        return items[:limit] if limit else items

    def _english(self, pairs: list[Pair], side: str | None, seed: int, language: str) -> list[Pair]:
        """The English side `side` of (already limited) pairs, see flare/english_side.py."""
        if side in (None, "gold"):
            return pairs
        data = self.study.data
        return english_side(side, pairs, seed, language, data.lexicon_dir, data.data_dir)

    def _splits(self, language: str | None) -> tuple[list, list]:
        """(train, validation) items: English examples for stage 1, pairs for a target language."""
        data = self.study.data
        load = (
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

    def _test(self, language: str) -> tuple[list[Pair], LoadStats]:
        """Test pairs, and what loading them skipped (e.g. QA answers lost in translation)."""
        data, stats = self.study.data, LoadStats()
        pairs = self.task.load_pairs(
            data.test_split, language, data.data_dir, data.translations_dir, data.source, stats=stats
        )
        return self._limit(pairs, data.max_test), stats

    # ----------------------------------------------------------------- stages

    def stage1_source(self) -> str:
        """The English task model stage 2 starts from: `stage1_model`, else this folder's own."""
        return self.study.stage1_model or str(self.out / "stage1" / "model")

    def stage1(self) -> Path | str:
        """Fine-tune LoRA on English task data and merge it; reused when already done, or given."""
        if self.study.stage1_model:
            return self.study.stage1_model
        model_dir = self.out / "stage1" / "model"
        if (model_dir / "config.json").is_file():
            return model_dir
        backbone, tokenizer, family = load_backbone(
            self.study.model, self.task, seed=self.study.seeds[0], placement=self.placement, family=self.study.family
        )
        model = adapt(backbone, flare_config(self.study.adapter, self.task, family))
        train, valid = self._splits(None)
        formatter = PairFormatter(self.task, tokenizer, family, "target", self.format)
        result = fit(
            model, train, formatter, self.study.stage1, self.study.seeds[0], self.out / "stage1" / "run",
            lambda m: self._score(m, formatter, valid, self.study.stage1.eval_batch_size), description="stage 1 (en)",
        )
        test_metrics = evaluate(
            model, formatter, self._english_test(), self.study.stage1.eval_batch_size, progress=False
        )
        print(f"stage 1: English test {self.task.metric} {test_metrics[self.task.metric]:.2f}", flush=True)
        merge_and_save(model, tokenizer, model_dir, self.study.model, self.task, self.study.family)
        summary = {**result.__dict__, "english_test": test_metrics}
        write_atomically(self.out / "stage1" / "summary.json", json.dumps(summary, indent=2, default=str))
        return model_dir

    def _english_test(self) -> list[Example]:
        data = self.study.data
        return self._limit(self.task.load(data.test_split, self.task.source_language, data.data_dir), data.max_test)

    def _score(self, model, formatter: PairFormatter, items: list, batch_size: int, extra=None) -> float:
        """The model-selection score on validation items."""
        metrics = evaluate(model, formatter, items, batch_size, extra, progress=False)
        return metrics[self.task.metric]

    def run(self, run: Run, stage1_dir: Path | str, adapter: Path | None = None,
            test_pairs: list[Pair] | None = None) -> dict[str, Any]:
        """One method on one language with one seed; returns its result record. With `adapter`
        (a saved adapter folder of this method), nothing is trained: that adapter is scored; with
        `test_pairs`, they are scored instead of the task's test split."""
        start = time.perf_counter()
        method = METHODS[run.method]
        view = method.view
        backbone, tokenizer, family = load_backbone(
            str(stage1_dir), self.task, placement=self.placement, family=self.study.family
        )
        formatter = PairFormatter(self.task, tokenizer, family, view, self.format)
        run_dir = run.folder(self.out)
        extra, summary = None, {}
        test, stats = (test_pairs, LoadStats()) if test_pairs is not None else self._test(run.language)
        test = self._english(test, run.test_english, run.seed, run.language)
        trained = run_dir / "trained.json"  # written once the adapter is saved: the other test sides reuse it
        reused = adapter is None and run.test_english is not None and trained.is_file()
        if reused:
            adapter = run_dir / "adapter"
        if not method.trains:
            model = backbone
        else:
            train, valid = [], []
            if adapter is None:
                train, valid = (self._english(items, run.train_english, run.seed, run.language)
                                for items in self._splits(run.language))
                if method.english_as_examples:
                    train = train + english_examples(train)
            source_dim = None
            if method.mt_states:
                extra, source_dim = self._mt_inputs(run.language, train + valid + test)
            torch.manual_seed(run.seed)  # the fresh adapter's A initialisation
        if adapter is not None:
            model = load_flare_model(backbone, adapter)
            summary = json.loads(trained.read_text(encoding="utf-8")) if reused else {"adapter": str(adapter)}
        elif method.trains:
            model = adapt(
                backbone, flare_config(self.study.adapter, self.task, family, run.fusion or "add_relu", source_dim)
            )
            collate = formatter if extra is None else (lambda items: {**formatter(items), **extra(items)})
            result = fit(model, train, collate, self.study.stage2, run.seed, run_dir,
                         lambda m: self._score(m, formatter, valid, self.study.stage2.eval_batch_size, extra),
                         description=f"{run.name} {run.language} seed {run.seed}")
            summary = {"best_epoch": result.best_epoch, "valid_score": result.best_score, "steps": result.steps}
            model.save_pretrained(run_dir / "adapter")
            write_atomically(trained, json.dumps(summary))
        predictions = predict(model, formatter, test, self.study.stage2.eval_batch_size, extra)
        metrics = score(self.task, predictions, test, formatter.view)
        if self.task.type == "classification":
            summary["predicted_classes"] = len(set(predictions.values()))
        return {
            "run_id": f"{self.task.name}/{run.key}", "task": self.task.name,
            "train_english": run.train_english, "test_english": run.test_english,
            "model": self.study.model, "method": run.method, "fusion": run.fusion, "label": run.label,
            "variant": run.variant, "stage2": study_to_dict(self.study)["stage2"],
            "language": run.language, "seed": run.seed, "metric": self.task.metric, "score": metrics[self.task.metric],
            "metrics": metrics, "n_test": len(test), "test_skipped": stats.skipped, "source": self.study.data.source,
            **summary,
            "wall_time_s": round(time.perf_counter() - start, 3),  # ms: a tiny zero-shot run is under 0.1 s
            "torch_threads": torch.get_num_threads(),  # wall times are only comparable at equal thread counts
            **self.placement.record(),  # and at equal devices and dtypes
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _mt_inputs(self, language: str, items: list):
        """FLARE-MT: the MT encoder's states of the target text, as extra model inputs. Every text
        is encoded once and kept in <output_dir>/mt_states (safetensors), shared by all seeds."""
        from flare.mt_encoder import MTEncoder, precompute_encoder_states

        encoder = MTEncoder(
            self.study.mt_model, max_length=self.study.data.max_length, device=self.study.device,
            dtype=self.study.dtype, language_map=self.study.language_map,
        )
        fields = self.task.text_fields

        def text(item) -> str:
            return " ".join(self._target(item).fields[f] for f in fields)

        store = precompute_encoder_states(
            encoder, [text(i) for i in items], language, self.out / "mt_states", show_progress=False
        )

        def states(batch_items):
            encoded, mask = store.get([text(i) for i in batch_items], language)
            return {"source_states": encoded, "source_attention_mask": mask}

        return states, encoder.hidden_size

    @staticmethod
    def _target(item: Pair | Example) -> Example:
        return item.target if isinstance(item, Pair) else item

    # ----------------------------------------------------------------- the study

    def done(self) -> dict[str, dict[str, Any]]:
        from flare.report import load_results

        return {r["run_id"]: r for r in load_results(self.results_path)} if self.results_path.is_file() else {}

    def _todo(self) -> tuple[dict[str, dict[str, Any]], list[Run]]:
        done = self.done()
        return done, [r for r in plan(self.study, self.variant()) if f"{self.task.name}/{r.key}" not in done]

    def _recorded(self) -> dict[str, Any] | None:
        return recorded_study(self.out)

    def variant(self) -> str | None:
        """The stage-2 sweep point this command's runs belong to (None: the folder's own settings)."""
        return folder_variant(self.study)

    def _create_output_dir(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FlareError(f"output_dir: cannot create {self.out} ({error.strerror or error})") from None

    def _record_settings(self) -> None:
        """Write study.yaml, the settings the folder's runs are made with (under the folder lock).
        A folder that holds runs keeps the lists of runs (languages, methods...) it already has."""
        settings = study_to_dict(self.study)
        recorded = self.out / "study.yaml"
        before = self._recorded()
        if before is not None:
            settings["stage2"] = before.get("stage2", settings["stage2"])  # a variant's own are in its records
            for key in ("languages", "methods", "fusions", "seeds"):
                if isinstance(before.get(key), list):
                    settings[key] = list(dict.fromkeys([*before[key], *settings[key]]))
            for key in ("train_english", "test_english"):
                if isinstance((before.get("data") or {}).get(key), list):
                    settings["data"][key] = list(dict.fromkeys([*before["data"][key], *settings["data"][key]]))
        write_atomically(  # the comment says where the last command ran; each result record says it per run
            recorded, f"# {self.placement.describe()}\n" + yaml.safe_dump(settings, sort_keys=False),
        )

    def single(self, run: Run, record: bool = True, adapter: Path | None = None,
               test_file: Path | None = None) -> dict[str, Any]:
        """One run (`flare train`, or `flare evaluate` with record=False), stage 1 first when it is
        missing; the folder is locked and its study.yaml checked and written as by `compare`. With
        `test_file` (a user's labelled file, see `pairs_from_file`), it is scored instead of the
        task's test split."""
        run = replace(run, variant=self.variant())
        self.check([run], trains=adapter is None, test_split=test_file is None)
        test_pairs = None if test_file is None else self._test_file(test_file, run)
        self._create_output_dir()
        with folder_lock(self.out, f"flare {'train' if record else 'evaluate'}"):
            self._check_same_settings()  # another command may have recorded other settings meanwhile
            self._record_settings()
            result = self.run(run, self.stage1(), adapter, test_pairs)
            if test_file is not None:
                result["test_file"] = str(test_file)
            if record:
                self._append(result)
        return result

    def compare(self, time_budget_minutes: float = 0.0) -> Path:
        """Run what is not recorded yet. With a time budget, no new run starts once it is spent
        (long studies run in chunks; each chunk adds to results.jsonl)."""
        _, todo = self._todo()
        if todo:
            self.check(todo)
        else:  # nothing left to run, yet the report must not claim settings the runs were not made with
            self._check_same_settings()
        self._create_output_dir()
        with folder_lock(self.out, "flare compare"):
            return self._compare_locked(time_budget_minutes)

    def _compare_locked(self, time_budget_minutes: float) -> Path:
        deadline = time.perf_counter() + 60 * time_budget_minutes if time_budget_minutes > 0 else None
        self._check_same_settings()  # another command may have recorded other settings meanwhile
        done, todo = self._todo()  # ...or recorded runs
        self._record_settings()
        print(f"{len(done)} runs already recorded, {len(todo)} to go", flush=True)
        if todo:
            stage1_dir = self.stage1()
            started = time.perf_counter()
            for number, run in enumerate(todo, 1):
                if deadline is not None and time.perf_counter() > deadline:
                    print(f"time budget spent: {len(todo) - number + 1} runs left for the next chunk", flush=True)
                    break
                print(f"[{number}/{len(todo)}] {run.label} {run.language} seed {run.seed}", flush=True)
                record = self.run(run, stage1_dir)
                self._append(record)
                spent = time.perf_counter() - started
                left = spent / number * (len(todo) - number)  # runs differ in cost: a rough guide
                print(
                    f"    {self.task.metric} {record['score']:.2f}  "
                    f"({record['wall_time_s']:.1f} s; about {left / 60:.0f} min left)",
                    flush=True,
                )
                if record.get("predicted_classes") == 1 and len(self.task.labels) > 1:
                    print(f"    warning: {run.label} {run.language} seed {run.seed} predicted one class for every "
                          "test example (a collapsed model; try another learning rate or more epochs)", flush=True)
                checkpoint = run.folder(self.out) / "checkpoint"
                shutil.rmtree(checkpoint, ignore_errors=True)  # recorded: the resume state is no longer needed
        if self.results_path.is_file():
            from flare.report import report

            paths = report(self.results_path, self.out)
            print(f"\n{paths['markdown'].read_text(encoding='utf-8').rstrip()}\n", flush=True)
        return self.results_path

    # ----------------------------------------------------------------- checks before any work

    def _test_file(self, path: Path, run: Run) -> list[Pair]:
        """The pairs of a user's test file; a missing English side is translated with mt_model."""
        translate = None
        if self.study.mt_model:
            def translate(texts: list[str]) -> list[str]:
                return machine_english(texts, run.language, self.task.source_language, self.study.mt_model,
                                    self.out / "translations", self.study.device, self.study.dtype,
                                    self.study.language_map)

        return self._limit(pairs_from_file(self.task, path, run.language, reads_english(run.method), translate),
                           self.study.data.max_test)

    def check(self, runs: list[Run], trains: bool = True, test_split: bool = True) -> None:
        """Stop with one line before anything is trained or written when a run could not finish:
        the output folder cannot be created, the model's config does not load or its architecture
        lacks the adapter's modules, a split the runs read does not load or pair, or a saved
        resume checkpoint is unreadable."""
        existing = self.out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise FlareError(f"output_dir: cannot create {self.out} ({existing} is not a writable folder)")
        self._check_same_settings()
        if any(METHODS[m].mt_states for m in self.study.methods) and self.study.mt_model:
            from flare.translate import check_mt_model

            check_mt_model(self.study.mt_model)
        stage1_done = bool(self.study.stage1_model) or (self.out / "stage1" / "model" / "config.json").is_file()
        longest = max(input_length(self.study.data.max_length, METHODS[method].view) for method in self.study.methods)
        check_model(self.stage1_source() if stage1_done else self.study.model, self.task,
                    self.study.adapter, self.study.data.max_length, longest, self.study.family)
        if not stage1_done:
            self._splits(None)
            self._english_test()
            check_checkpoint(self.out / "stage1" / "run" / "checkpoint")
        seed = self.study.seeds[0]
        for language in dict.fromkeys(run.language for run in runs):
            test = self._test(language)[0] if test_split else []
            for side in dict.fromkeys(r.test_english for r in runs if r.language == language):
                self._english(test, side, seed, language)  # e.g. a lexicon file that is missing or broken
            if trains and any(r.language == language and METHODS[r.method].trains for r in runs):
                splits = self._splits(language)
                for side in dict.fromkeys(r.train_english for r in runs if r.language == language):
                    for items in splits:
                        self._english(items, side, seed, language)
        for run in runs:
            check_checkpoint(run.folder(self.out) / "checkpoint")

    def _check_same_settings(self) -> None:
        """A study folder that holds results or a stage-1 model holds them for its study.yaml's
        settings: continuing it with other ones would mix runs of two studies in one table."""
        recorded = self.out / "study.yaml"
        if self._recorded() is None:
            return
        try:
            before = from_dict(Study, read_study_yaml(recorded))
        except FlareError as error:
            raise FlareError(f"{recorded}: {error}") from None
        changes = changed_settings(before, self.study)
        if changes:
            more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
            raise FlareError(
                f"output_dir {self.out} holds runs made with other settings: {changes[0]}{more}; "
                "use a new output_dir, or delete that folder to start over"
            )

    def _append(self, record: dict[str, Any]) -> None:
        """Add a record: one locked append, so no concurrent writer loses one (never a half-written line)."""
        append_line(self.results_path, json.dumps(record, ensure_ascii=False))


def compare(study: Study, time_budget_minutes: float = 0.0) -> Path:
    """Run (or continue) a study; returns the path of results.jsonl."""
    return Pipeline(study).compare(time_budget_minutes)
