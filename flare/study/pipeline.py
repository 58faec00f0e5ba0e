"""The study: stage 1 (English task fine-tuning, merged), then every method x target language x
seed, each run written as one record to results.jsonl as soon as it finishes. A rerun skips what
is already recorded, reuses the stage-1 model, and continues interrupted training runs from their
last epoch checkpoint.

Layout of `output_dir`: study.yaml (the settings used), stage1/model (merged English task model),
stage1/run (its logs and checkpoint), runs/<method>/<language>/seed<k>/ (logs, checkpoint,
adapter; a joint adapter's in runs/<method>/joint/seed<k>/, a leave-one-out one's in
runs/<method>/joint-without-<language>/seed<k>/), results.jsonl, and the report
(results.csv/.md/.png); .flare.lock names the command that holds the folder while one runs (a
second one is refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from flare.adapter import EnglishStateCache, load_flare_model
from flare.data.examples import LoadStats, Pair
from flare.data.task_spec import Task
from flare.data.tasks import get_task
from flare.files import folder_lock, write_atomically
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.loading import adapt, flare_config, load_backbone, merge_and_save
from flare.hf.scoring import evaluate_items, predict_items, score
from flare.study.data import StudyData, check_joint_languages
from flare.study.english_cache import attach_english_cache
from flare.study.folder import (
    append_record,
    check_same_settings,
    create_output_dir,
    folder_variant,
    record_settings,
    stage1_dir,
    stage1_done,
    stage1_source,
)
from flare.study.methods import METHODS
from flare.study.objectives import machine_side, saved_model, training_batches, training_model, training_record
from flare.study.preflight import check_plan
from flare.study.report import load_results, report
from flare.study.runs import Run, plan
from flare.study.settings import Study
from flare.study.training import fit


def quiet_libraries() -> None:
    """Keep the terminal for progress and results: no weight-loading reports or deprecation noise."""
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # per-run "Loading weights" bars; ours are plain tqdm
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)


class Pipeline:
    """Runs a study; the public entry point is `compare`."""

    def __init__(self, study: Study) -> None:
        self.study = study.validate()
        self.placement = self.study.placement()
        self.task: Task = get_task(study.task)
        self.out = Path(study.output_dir)
        self.format = FormatSettings(max_length=study.data.max_length)
        self.results_path = self.out / "results.jsonl"
        self.data = StudyData(study, self.task, self.out)
        # FLARE's English states, shared by the study's runs in this process (flare/study/english_cache.py)
        self.english_cache: EnglishStateCache | None = None

    # ----------------------------------------------------------------- stages

    def stage1(self) -> Path | str:
        """Fine-tune LoRA on English task data and merge it; reused when already done, or given."""
        if stage1_done(self.study):
            return stage1_source(self.study)
        model_dir = stage1_dir(self.out)
        backbone, tokenizer, family = load_backbone(
            self.study.model, self.task, seed=self.study.seeds[0], placement=self.placement, family=self.study.family
        )
        model = adapt(backbone, flare_config(self.study.adapter.flare_kwargs(), self.task, family))
        train, valid = self.data.splits(None)
        formatter = PairFormatter(self.task, tokenizer, family, "target", self.format)
        result = fit(
            model, train, formatter, self.study.stage1, self.study.seeds[0], self.out / "stage1" / "run",
            lambda m: self._score(m, formatter, valid, self.study.stage1.eval_batch_size), description="stage 1 (en)",
        )
        test_metrics = evaluate_items(
            model, formatter, self.data.english_test(), self.study.stage1.eval_batch_size, progress=False
        )
        print(f"stage 1: English test {self.task.metric} {test_metrics[self.task.metric]:.2f}", flush=True)
        merge_and_save(model, tokenizer, model_dir, self.study.model, self.task, self.study.family)
        summary = {**{k: v for k, v in result.__dict__.items() if k != "step_losses"}, "english_test": test_metrics}
        write_atomically(self.out / "stage1" / "summary.json", json.dumps(summary, indent=2, default=str))
        return model_dir

    @property
    def english_cache_dir(self) -> Path:
        """Where English states past the memory budget are spilled; kept while runs are left
        (an interrupted study resumes with them) and removed when the command ends."""
        return self.out / "english_cache"

    def _forget_english_cache(self) -> None:
        self.english_cache = None
        shutil.rmtree(self.english_cache_dir, ignore_errors=True)

    def _score(self, model, formatter: PairFormatter, items: list, batch_size: int, extra=None) -> float:
        """The model-selection score on validation items."""
        metrics = evaluate_items(model, formatter, items, batch_size, extra, progress=False)
        return metrics[self.task.metric]

    def run(self, run: Run, stage1_model: Path | str, adapter_dir: Path | None = None,
            test_pairs: list[Pair] | None = None) -> dict[str, Any]:
        """One method on one language with one seed; returns its result record. With `adapter_dir`
        (a saved adapter folder of this method), nothing is trained: that adapter is scored; with
        `test_pairs`, they are scored instead of the task's test split."""
        start = time.perf_counter()
        method = METHODS[run.method]
        view = method.view
        backbone, tokenizer, family = load_backbone(
            str(stage1_model), self.task, placement=self.placement, family=self.study.family
        )
        formatter = PairFormatter(self.task, tokenizer, family, view, self.format)
        run_dir = run.folder(self.out)
        extra, summary = None, {}
        test, stats = (test_pairs, LoadStats()) if test_pairs is not None else self.data.test(run.language)
        test = self.data.english(test, run.test_english, run.seed, run.language)
        # written once the adapter is saved: the other test sides, and a joint adapter's other languages, reuse it
        trained = run_dir / "trained.json"
        reused = adapter_dir is None and (run.test_english is not None or run.joint) and trained.is_file()
        languages = run.trained_languages(self.study.languages)
        if reused:
            adapter_dir = run_dir / "adapter"
            check_joint_languages(run_dir, languages)
        if not method.trains:
            model = backbone
        else:
            train, valid = [], []
            if adapter_dir is None:
                train, valid = self.data.training(run, languages)
            source_dim = None
            items = [i for pool in train.pools.values() for i in pool] if run.joint and train else list(train)
            if method.mt_states:
                extra, source_dim = self.data.mt_inputs(items + valid + test)
            torch.manual_seed(run.seed)  # the fresh adapter's A initialisation
        training = adapter_dir is None and method.trains
        if adapter_dir is not None:
            model = saved_model(run.method, load_flare_model(backbone, adapter_dir), adapter_dir)
            summary = json.loads(trained.read_text(encoding="utf-8")) if reused else {"adapter": str(adapter_dir)}
        elif training:
            adapter_config = flare_config(
                self.study.adapter.flare_kwargs(), self.task, family, run.fusion or "add_relu", source_dim
            )
            model = training_model(run.method, adapt(backbone, adapter_config), self.study, self.task, run.seed)
        cache = None
        if method.fused and view == "flare":  # FLARE's English pass once per example (data.english_cache)
            cache = attach_english_cache(model, formatter, items + valid + test, self.study.data,
                                         self.study.stage2.batch_size, self.english_cache_dir, self.english_cache)
            if cache is not None and cache.memoize:
                self.english_cache = cache
            passes_before = (cache.stats.computed, cache.stats.hits) if cache is not None else (0, 0)
        if training:
            reads = formatter if method.train_view is None else PairFormatter(
                self.task, tokenizer, family, method.train_view, self.format)  # mid-align: both sides in training
            machine = {side: self.data.english(train, side, run.seed, run.language)
                       for side in machine_side(method, run.train_english)}
            batches = training_batches(run.method, reads, machine)
            collate = batches if extra is None else (lambda items: {**batches(items), **extra(items)})
            result = fit(model, train, collate, self.study.stage2, run.seed, run_dir,
                         lambda m: self._score(m, formatter, valid, self.study.stage2.eval_batch_size, extra),
                         description=f"{run.name} {run.language} seed {run.seed}")
            summary = {"best_epoch": result.best_epoch, "valid_score": result.best_score, "steps": result.steps,
                       **training_record(run, model, result.steps, self.study, self.task)}
            if run.joint:
                summary.update(joint_languages=languages, joint_epoch_counts=train.counts,
                               joint_sampling=self.study.joint.sampling)
            if method.fused and (gates := list(model.english_gate_values().values())):  # where training left them
                summary["english_gate"] = {"min": min(gates), "mean": sum(gates) / len(gates), "max": max(gates)}
            model.save_pretrained(run_dir / "adapter", languages=languages)  # the card lists them
            write_atomically(trained, json.dumps(summary))
        predictions = predict_items(model, formatter, test, self.study.stage2.eval_batch_size, extra)
        if cache is not None:
            model.english_state_cache = None
            # rows whose English pass ran in this run, and rows served from earlier passes (this run's or the study's)
            summary["english_passes"] = {"computed": cache.stats.computed - passes_before[0],
                                         "reused": cache.stats.hits - passes_before[1]}
        metrics = score(self.task, predictions, test, formatter.view)
        if self.task.type == "classification":
            summary["predicted_classes"] = len(set(predictions.values()))
        return {
            "run_id": run.record_id(self.task.name), "task": self.task.name,
            "train_english": run.train_english, "test_english": run.test_english,
            "model": self.study.model, "method": run.method, "fusion": run.fusion, "label": run.label,
            "variant": run.variant, "stage2": asdict(self.study.stage2),
            "joint": run.joint, "held_out": run.language if run.scope == "held-out" else None,
            "language": run.language, "seed": run.seed, "metric": self.task.metric, "score": metrics[self.task.metric],
            "metrics": metrics, "n_test": len(test), "test_skipped": stats.skipped, "source": self.study.data.source,
            **summary,
            "wall_time_s": round(time.perf_counter() - start, 3),  # ms: a tiny zero-shot run is under 0.1 s
            "torch_threads": torch.get_num_threads(),  # wall times are only comparable at equal thread counts
            **self.placement.record(),  # and at equal devices and dtypes
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # ----------------------------------------------------------------- the study

    def done(self) -> dict[str, dict[str, Any]]:
        return {r["run_id"]: r for r in load_results(self.results_path)} if self.results_path.is_file() else {}

    def _todo(self) -> tuple[dict[str, dict[str, Any]], list[Run]]:
        done = self.done()
        runs = plan(self.study, folder_variant(self.study))
        return done, [r for r in runs if r.record_id(self.task.name) not in done]

    def single(self, run: Run, record: bool = True, adapter_dir: Path | None = None,
               test_file: Path | None = None) -> dict[str, Any]:
        """One run (`flare train`, or `flare evaluate` with record=False), stage 1 first when it is
        missing; the folder is locked and its study.yaml checked and written as by `compare`. With
        `test_file` (a user's labelled file, see `pairs_from_file`), it is scored instead of the
        task's test split."""
        run = replace(run, variant=folder_variant(self.study))
        check_plan(self.study, self.task, self.data, [run], trains=adapter_dir is None, test_split=test_file is None)
        test_pairs = None if test_file is None else self.data.test_file(test_file, run)
        create_output_dir(self.out)
        with _folder_lock(self.out, f"flare {'train' if record else 'evaluate'}"):
            check_same_settings(self.study)  # another command may have recorded other settings meanwhile
            if _main_process():
                record_settings(self.study, self.placement.describe())
            result = self.run(run, self.stage1(), adapter_dir, test_pairs)
            self._forget_english_cache()
            if test_file is not None:
                result["test_file"] = str(test_file)
            if record and _main_process():
                append_record(self.results_path, result)
        return result

    def compare(self, time_budget_minutes: float = 0.0) -> Path:
        """Run what is not recorded yet. With a time budget, no new run starts once it is spent
        (long studies run in chunks; each chunk adds to results.jsonl)."""
        _, todo = self._todo()
        for run in plan(self.study, folder_variant(self.study)):  # recorded joint runs too: their adapter is shared
            if run.joint:
                check_joint_languages(run.folder(self.out), run.trained_languages(self.study.languages))
        if todo:
            check_plan(self.study, self.task, self.data, todo)
        else:  # nothing left to run, yet the report must not claim settings the runs were not made with
            check_same_settings(self.study)
        create_output_dir(self.out)
        with _folder_lock(self.out, "flare compare"):
            return self._compare_locked(time_budget_minutes)

    def _compare_locked(self, time_budget_minutes: float) -> Path:
        deadline = time.perf_counter() + 60 * time_budget_minutes if time_budget_minutes > 0 else None
        check_same_settings(self.study)  # another command may have recorded other settings meanwhile
        done, todo = self._todo()  # ...or recorded runs
        if _main_process():
            record_settings(self.study, self.placement.describe())
        print(f"{len(done)} runs already recorded, {len(todo)} to go", flush=True)
        if todo:
            stage1_model = self.stage1()
            started = time.perf_counter()
            for number, run in enumerate(todo, 1):
                if deadline is not None and time.perf_counter() > deadline:
                    print(f"time budget spent: {len(todo) - number + 1} runs left for the next chunk", flush=True)
                    break
                print(f"[{number}/{len(todo)}] {run.label} {run.language} seed {run.seed}", flush=True)
                record = self.run(run, stage1_model)
                if not _main_process():
                    continue  # every process trains (its share); the first one records
                append_record(self.results_path, record)
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
            self._forget_english_cache()
        if self.results_path.is_file() and _main_process():
            paths = report(self.results_path, self.out)
            print(f"\n{paths['markdown'].read_text(encoding='utf-8').rstrip()}\n", flush=True)
        return self.results_path


def _main_process() -> bool:
    """Under torchrun / accelerate launch every process runs the study (each trains its share of
    every batch); only the first (RANK 0, set before any process group exists) locks the folder
    and writes records, settings and reports."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def _folder_lock(folder: Path, command: str):
    return folder_lock(folder, command) if _main_process() else contextlib.nullcontext()


def compare(study: Study, time_budget_minutes: float = 0.0) -> Path:
    """Run (or continue) a study; returns the path of results.jsonl."""
    return Pipeline(study).compare(time_budget_minutes)
