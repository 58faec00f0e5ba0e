"""The plan's checks: everything that would stop a run part-way is found before anything is
trained or written, and said in one line."""

from __future__ import annotations

from pathlib import Path

from flare.data.task_spec import Task
from flare.errors import FlareError
from flare.hf.checks import check_model
from flare.hf.formats import input_length
from flare.mt.translate import check_mt_model
from flare.study.data import StudyData, check_joint_languages
from flare.study.folder import check_same_settings, check_writable, stage1_done, stage1_source
from flare.study.methods import METHODS
from flare.study.objectives import check_objectives
from flare.study.runs import Run
from flare.study.settings import Study
from flare.study.training import check_checkpoint


def check_plan(study: Study, task: Task, data: StudyData, runs: list[Run], trains: bool = True,
               test_split: bool = True) -> None:
    """Stop with one line when a run could not finish: the output folder cannot be created or holds
    other settings, the model's config does not load or its architecture lacks the adapter's
    modules, a split or English side the runs read does not load or pair, or a saved resume
    checkpoint is unreadable. `trains=False`: the runs score saved adapters; `test_split=False`:
    they score a user's file instead of the task's test split."""
    out = Path(study.output_dir)
    check_writable(out)
    check_same_settings(study)
    if any(METHODS[m].mt_states for m in study.methods) and study.mt_model:
        check_mt_model(study.mt_model)
    done = stage1_done(study)
    longest = max(input_length(study.data.max_length, METHODS[method].view) for method in study.methods)
    config = check_model(stage1_source(study) if done else study.model, task, study.adapter.flare_kwargs(),
                         study.data.max_length, longest, study.family)
    check_objectives(study, task, config)  # e.g. a mixing layer past the model's depth
    if not done:
        data.splits(None)
        data.english_test()
        check_checkpoint(out / "stage1" / "run" / "checkpoint")
    seed = study.seeds[0]
    # every language a run trains on: its own, or all of a joint adapter's
    trained = {run: run.trained_languages(study.languages) for run in runs if trains and METHODS[run.method].trains}
    for language in dict.fromkeys([*(run.language for run in runs), *(lang for ls in trained.values() for lang in ls)]):
        scored = [r for r in runs if r.language == language]
        test = _joint_test(data, language, scored) if test_split and scored else []
        for side in dict.fromkeys(r.test_english for r in scored):
            data.english(test, side, seed, language)  # e.g. a lexicon file that is missing or broken
        sides = list(dict.fromkeys(r.train_english for r, languages in trained.items() if language in languages))
        if sides:
            splits = data.splits(language)
            for side in sides:
                for items in splits:
                    data.english(items, side, seed, language)
    for run in runs:
        check_checkpoint(run.folder(out) / "checkpoint")
        if run.joint and run in trained:
            check_joint_languages(run.folder(out), trained[run])


def _joint_test(data: StudyData, language: str, runs: list[Run]) -> list:
    """A language's test pairs; for a joint or leave-one-out adapter of a method that reads English
    at test time, a language without them is said in those terms (before any adapter is trained)."""
    try:
        return data.test(language)[0]
    except FlareError as error:
        readers = sorted({r.method for r in runs if r.joint and METHODS[r.method].english_at_test})
        if not readers:
            raise
        raise FlareError(
            f"joint: {language} has no English side at test time, which {', '.join(readers)} reads ({error}); "
            "give its translations (data.translations_dir) or leave the language out"
        ) from None
