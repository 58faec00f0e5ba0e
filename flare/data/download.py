"""`flare download`: the three built-in tasks from the Hugging Face Hub into a datasets folder, in
the layout the local readers read (flare/data/task_spec.py `local_path`):

    nusax-senti/<language>/{train,valid,test}.csv       id,text,label
    xnli/dev-<language>.tsv, xnli/test-labeled/test-<language>.tsv, xnli/train-en.tsv
                                                        premise \\t hypothesis \\t label
    tydiqa-goldp/<language>/{train,dev}.json            SQuAD 1.1 JSON

Rows come through the same Hub reader and validation as a run without local files
(flare/data/hub.py), so a downloaded folder gives the examples the Hub gives. Each file is written
atomically and skipped when it exists: an interrupted download continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from flare.data.examples import Example
from flare.data.hub import check_hub_reachable, load_from_hub
from flare.data.task_spec import Task
from flare.data.tasks import BUILTIN_TASKS, get_task
from flare.errors import FlareError
from flare.files import write_atomically

TASKS = tuple(BUILTIN_TASKS)


def target_file(task: Task, split: str, language: str, root: Path) -> Path:
    """Where the local reader looks for (split, language) of a built-in task."""
    if task.reader == "nusax":
        return root / "nusax-senti" / language / f"{split}.csv"
    if task.reader == "xnli":
        return root / "xnli" / ("test-labeled" if split == "test" else "") / f"{split}-{language}.tsv"
    return root / "tydiqa-goldp" / language / f"{split}.json"


def _one_line(text: str) -> str:
    # the XTREME layout has no quoting: a tab or line break inside a field would shift the columns
    return " ".join(text.split())


def render(task: Task, examples: Sequence[Example]) -> str:
    """The file text of one split in the task's local layout."""
    if task.reader == "nusax":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "text", "label"])
        for example in examples:
            writer.writerow([example.id, example.fields["text"], task.labels[example.label]])
        return out.getvalue()
    if task.reader == "xnli":
        return "".join(
            f"{_one_line(e.fields['premise'])}\t{_one_line(e.fields['hypothesis'])}\t{task.labels[e.label]}\n"
            for e in examples
        )
    paragraphs = [
        {"context": e.fields["context"], "qas": [{
            "id": e.id, "question": e.fields["question"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(e.answers["text"], e.answers["answer_start"])],
        }]}
        for e in examples
    ]
    return json.dumps({"version": "1.1", "data": [{"title": "", "paragraphs": paragraphs}]}, ensure_ascii=False)


def plan(tasks: Sequence[str], languages: Sequence[str] | None) -> list[tuple[Task, str, str]]:
    """(task, split, language) of every file to fetch; unknown names are refused before any download."""
    unknown = [name for name in tasks if name not in BUILTIN_TASKS]
    if unknown:
        raise FlareError(f"download: unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    specs = [get_task(name) for name in tasks]
    stray = [lang for lang in languages or () if not any(lang in task.languages for task in specs)]
    if stray:
        raise FlareError(f"download: language {stray[0]!r} is in none of the tasks {', '.join(tasks)}")
    chosen = []
    for task in specs:
        wanted = [lang for lang in languages if lang in task.languages] if languages else task.languages
        if not wanted:
            raise FlareError(f"download: {task.name} has none of the languages {', '.join(languages or ())}")
        chosen += [(task, split, lang) for lang in wanted for split in task.splits[lang]]
    return chosen


def download(data_dir: str | Path, tasks: Sequence[str] = TASKS, languages: Sequence[str] | None = None) -> Path:
    """Fetch the tasks' splits into `data_dir`; files already there are kept. Returns the folder."""
    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise FlareError(f"download: {root} exists and is not a folder")
    missing = [(task, split, lang) for task, split, lang in plan(tasks, languages)
               if not target_file(task, split, lang, root).is_file()]
    if missing:
        check_hub_reachable("download")
    for task, split, language in tqdm(missing, desc="download", unit="file"):
        path = target_file(task, split, language, root)
        write_atomically(path, render(task, load_from_hub(task.name, split, language, task.labels)))
    return root
