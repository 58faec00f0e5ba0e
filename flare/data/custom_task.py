"""Custom tasks declared in YAML. See examples/tasks/ for a complete, working example.

Keys (required: name, type, languages, files; classification also needs labels):

    name: toy-sentiment
    type: classification            # or qa
    languages: [en, de]
    source_language: en             # default: en
    labels: [negative, positive]    # classification; index = class id
    label_map: {"0": negative}      # optional raw value -> label
    text_fields: [text]             # default: [text]; qa: [question, context]
    columns: {text: sentence}       # optional task field -> file column (default: same name)
    id_column: id                   # optional; default: the row number is the id
    label_column: label             # default: label
    answers_column: answers         # qa: SQuAD dict (JSON text in CSV); or answer_text_column + answer_start_column
    files: "{language}/{split}.csv" # pattern, or {split: {language: path}}; relative to the YAML's folder
    splits: [train, test]           # with a pattern: all languages, or {language: [splits]}
    parallel: true                  # languages are human translations of each other
    pair_by: id                     # or row
    metric: macro_f1                # or your own: "module:function" or "metrics.py:function"
                                    # (beside this file), called as function(predictions, references)
                                    # and returning 0..100; or a Hugging Face `evaluate` metric (extra
                                    # [metrics]): "evaluate:matthews_correlation" (Hub or cache), or a
                                    # local script/folder "evaluate:./my_metric.py" (beside this file).
                                    # It gets label ids (an unparseable answer is -1), or for qa the
                                    # predicted strings and each question's list of gold answer texts.
                                    # A dict result gives the key named like the metric, else its only
                                    # key; pick another with "evaluate:rouge#rougeL". Loaded and tried
                                    # on a sample when this file is read, so mistakes show up at once.
    metric_args: {average: macro}   # evaluate metrics only: keyword arguments for its compute()
    metric_scale: 100               # evaluate metrics only: score = value x metric_scale. Default 100,
                                    # since evaluate reports most metrics (accuracy, f1, matthews, bleu)
                                    # in 0..1; write 1 for one that is already 0..100 (sacrebleu, squad)
    prompt: {body: "Review: {text}", cue: "Sentiment:"}
    seq2seq_prompt: {body: "review: {text}", cue: ""}
    verbalizer: [bad, good]         # answer words for decoders / mT5; default: labels

Relative paths resolve against the YAML file's folder (not `data_dir`), so a task file and its data
can travel together.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flare import extras
from flare.data.examples import ColumnSpec
from flare.data.task_spec import QA_METRICS, PromptTemplate, Task
from flare.errors import FlareError, described
from flare.files import check_name, load_yaml, read_text

_KEYS = {
    "name", "type", "languages", "source_language", "labels", "label_map", "text_fields", "columns", "id_column",
    "label_column", "answers_column", "answer_text_column", "answer_start_column", "files", "splits", "parallel",
    "pair_by", "metric", "metric_args", "metric_scale", "metrics", "prompt", "seq2seq_prompt", "verbalizer",
    "description", "dataset",
}
_METRICS = {"classification": ["accuracy", "macro_f1"], "qa": QA_METRICS}


def _str_list(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int)) for v in value):
        raise FlareError(f"{where}: '{key}' must be a non-empty list of strings")
    if any(isinstance(v, bool) for v in value):  # YAML 1.1 reads bare no/yes/on/off as booleans
        raise FlareError(f"{where}: '{key}' contains a boolean; quote words like 'no' and 'yes'")
    items = [str(v) for v in value]
    if len(set(items)) != len(items):
        raise FlareError(f"{where}: '{key}' has duplicates")
    return items


def _template(value: Any, where: str, key: str, fields: list[str], default: PromptTemplate) -> PromptTemplate:
    if value is None:
        return default
    if not isinstance(value, dict) or "body" not in value:
        raise FlareError(f"{where}: '{key}' must be a mapping with 'body' (and optional 'cue')")
    template = PromptTemplate(str(value["body"]), str(value.get("cue", "")))
    try:
        template.body.format(**{name: "" for name in fields})
    except (KeyError, IndexError, ValueError) as err:
        raise FlareError(f"{where}: '{key}' body uses an unknown placeholder {err}") from None
    return template


def _files(
    value: Any, splits_value: Any, languages: list[str], base: Path, where: str
) -> tuple[dict[str, dict[str, Path]], dict[str, list[str]]]:
    def beside_task_file(path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else base / p

    files: dict[str, dict[str, Path]] = {}
    if isinstance(value, str):
        if isinstance(splits_value, list):
            splits = {lang: [str(s) for s in splits_value] for lang in languages}
        elif isinstance(splits_value, dict):
            splits = {str(lang): _str_list(v, where, f"splits[{str(lang)[:40]!r}]") for lang, v in splits_value.items()}
        else:
            raise FlareError(f"{where}: with a 'files' pattern, 'splits' must list the splits")
        for lang, names in splits.items():
            for split in names:
                try:
                    pattern = value.format(language=lang, split=split)
                except (KeyError, IndexError, ValueError):
                    raise FlareError(
                        f"{where}: the 'files' pattern {value[:60]!r} may use only {{language}} and {{split}}"
                    ) from None
                files.setdefault(split, {})[lang] = beside_task_file(pattern)
    elif isinstance(value, dict):
        for split, per_lang in value.items():
            if not isinstance(per_lang, dict):
                raise FlareError(f"{where}: files.{split} must map language to path")
            files[str(split)] = {str(lang): beside_task_file(str(p)) for lang, p in per_lang.items()}
        splits = {}
        for split, per_lang in files.items():
            for lang in per_lang:
                splits.setdefault(lang, []).append(split)
    else:
        raise FlareError(f"{where}: 'files' must be a path pattern or a mapping split -> language -> path")
    for lang, names in splits.items():
        if lang not in languages:
            raise FlareError(f"{where}: files name language '{lang}' that is not in 'languages'")
        for split in names:
            check_name(split, f"{where}: split name")  # it names translation folders
    return files, splits


def task_from_yaml(path: Path) -> Task:
    """Build a `Task` from a YAML declaration; every mistake is a one-line FlareError."""
    where = str(path)
    if not path.is_file():
        raise FlareError(f"{where}: task file not found")
    spec = load_yaml(read_text(path), where)
    if not isinstance(spec, dict):
        raise FlareError(f"{where}: a task file must be a YAML mapping")
    return task_from_dict(spec, path.parent, where, needs_data=True)


def task_from_dict(
    spec: dict[str, Any], folder: str | Path = ".", where: str = "task", needs_data: bool = False
) -> Task:
    """A task from the keys of a task YAML (examples/tasks/): `name`, `type`, `languages`, `labels`,
    ... In Python, `files` and `dataset` may both be left out: such a task describes your data
    (labels, text fields, prompts) for `PairFormatter` and `pairs_from_dataset`, and reads no split.
    Relative files are found from `folder`."""
    if not isinstance(spec, dict):
        raise FlareError(f"{where}: a task must be a mapping of task keys, got {type(spec).__name__}")
    folder = Path(folder)  # relative files, metric scripts and modules are found here
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise FlareError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("name", "type", "languages"):
        if key not in spec:
            raise FlareError(f"{where}: missing required key '{key}'")
    if ("files" in spec and "dataset" in spec) or (needs_data and "files" not in spec and "dataset" not in spec):
        raise FlareError(
            f"{where}: give 'files' (local files) or 'dataset' (datasets.load_dataset arguments), one of them"
        )
    task_type = spec["type"]
    if task_type not in ("classification", "qa"):
        raise FlareError(f"{where}: 'type' must be classification or qa, got {task_type!r}")
    check_name(str(spec["name"]), f"{where}: task name")  # it names translation folders and run ids
    languages = _str_list(spec["languages"], where, "languages")
    for code in languages:
        check_name(code, f"{where}: language code")  # it names run and translation folders
    source = str(spec.get("source_language", "en"))
    if source not in languages:
        raise FlareError(f"{where}: source_language '{source}' is not in 'languages'")
    default_fields = ["question", "context"] if task_type == "qa" else ["text"]
    text_fields = _str_list(spec.get("text_fields", default_fields), where, "text_fields")
    labels: list[str] = []
    if task_type == "classification":
        labels = _str_list(spec.get("labels"), where, "labels")
        if len(labels) < 2:
            raise FlareError(f"{where}: a classification task needs at least two labels")
    elif set(text_fields) != {"question", "context"}:
        raise FlareError(f"{where}: a qa task's text_fields must be [question, context]")
    if task_type == "classification" and len(text_fields) > 2:
        raise FlareError(f"{where}: encoders take one text or a text pair; declare at most two text_fields")
    columns = spec.get("columns") or {}
    if not isinstance(columns, dict) or set(columns) - set(text_fields):
        raise FlareError(f"{where}: 'columns' must map text fields ({', '.join(text_fields)}) to file columns")
    answer_text, answer_start = spec.get("answer_text_column"), spec.get("answer_start_column")
    column_spec = ColumnSpec(
        fields={name: str(columns.get(name, name)) for name in text_fields},
        label=str(spec.get("label_column", "label")) if task_type == "classification" else None,
        id=str(spec["id_column"]) if spec.get("id_column") else None,
        answers=None if (task_type != "qa" or answer_text) else str(spec.get("answers_column", "answers")),
        answer_text=answer_text, answer_start=answer_start,
    )
    if task_type == "qa" and bool(answer_text) != bool(answer_start):
        raise FlareError(f"{where}: give both answer_text_column and answer_start_column, or answers_column")
    raw_map = spec.get("label_map") or {}
    if not isinstance(raw_map, dict):
        raise FlareError(f"{where}: 'label_map' must map raw label values to labels, got {type(raw_map).__name__}")
    label_map = {str(k): str(v) for k, v in raw_map.items()}
    for raw, name in label_map.items():
        if name not in labels:
            raise FlareError(f"{where}: label_map sends {raw!r} to unknown label {name!r}")
    dataset = _dataset(spec["dataset"], folder, where) if "dataset" in spec else None
    # with a dataset, the pattern only lays out which splits exist per language
    if "files" in spec or dataset is not None:
        pattern = spec.get("files", "{language}/{split}")
        files, splits = _files(pattern, spec.get("splits"), languages, folder, where)
    else:  # described in Python: no split to read
        files, splits = {}, {language: [] for language in languages}
    if dataset is not None:
        files = {}
    metrics = _METRICS[task_type] if "metrics" not in spec else _str_list(spec["metrics"], where, "metrics")
    metric = str(spec.get("metric", "accuracy" if task_type == "classification" else "f1"))
    metric_function = None
    if not metric.startswith("evaluate:") and ("metric_args" in spec or "metric_scale" in spec):
        raise FlareError(f"{where}: metric_args and metric_scale apply only to 'evaluate:' metrics")
    if metric.startswith("evaluate:"):  # a Hugging Face `evaluate` metric, loaded and tried now
        metric_function = _evaluate_metric(metric, spec, folder, where, task_type, len(labels))
        metrics = [*metrics, metric]
    elif ":" in metric:  # a Python callable: "module:function" or "file.py:function" beside the YAML
        metric_function = _metric_callable(metric, folder, where)
        metrics = [*metrics, metric]
    if metric not in metrics:
        raise FlareError(
            f"{where}: metric '{metric}' must be one of {', '.join(metrics)}, or 'module:function' or 'evaluate:NAME'"
        )
    verbalizer = _str_list(spec.get("verbalizer", labels), where, "verbalizer") if labels else []
    if len(verbalizer) != len(labels):
        raise FlareError(f"{where}: verbalizer needs one word per label ({len(labels)})")
    pair_by = str(spec.get("pair_by", "id" if column_spec.id else "row"))
    if pair_by not in ("id", "row"):
        raise FlareError(f"{where}: pair_by must be id or row")
    body = " ".join("{" + name + "}" for name in text_fields)
    default_prompt = PromptTemplate(
        "\n".join(f"{n.capitalize()}: {{{n}}}" for n in text_fields), "Answer:" if task_type == "qa" else "Label:"
    )
    prompt = _template(spec.get("prompt"), where, "prompt", text_fields, default_prompt)
    seq2seq = _template(spec.get("seq2seq_prompt"), where, "seq2seq_prompt", text_fields, PromptTemplate(body, ""))
    test_split = "test" if any("test" in s for s in splits.values()) else None
    return Task(
        name=str(spec["name"]), type=task_type, languages=languages, source_language=source, labels=labels,
        metric=metric, metrics=metrics, text_fields=text_fields, splits=splits,
        split_roles={
            "train": "train",
            "validation": next((s for s in ("valid", "dev") if any(s in names for names in splits.values())), None),
            "test": test_split,
        },
        encoder_fields=["question", "context"] if task_type == "qa" else text_fields,
        decoder_prompt=prompt, seq2seq_prompt=seq2seq, verbalizer=verbalizer,
        parallel=bool(spec.get("parallel", False)), pair_by=pair_by, reader="custom", files=files, columns=column_spec,
        label_map=label_map or None, metric_function=metric_function, dataset=dataset,
    )


def _dataset(value: Any, base: Path, where: str) -> dict[str, Any]:
    """`datasets.load_dataset` arguments: a Hub id, or a mapping with `path` (a Hub id or a builder
    such as csv/json/parquet) and optional `name`, `data_files` (relative to the task file, like
    `files`), `split`, `revision`; the strings {language} and {split} are filled in per load."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise FlareError(f"{where}: 'dataset' must be a Hub id or a mapping with a 'path'")
    allowed = {"path", "name", "data_files", "data_dir", "split", "revision"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise FlareError(f"{where}: dataset: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")

    def beside(files: Any) -> Any:
        if isinstance(files, str):
            return files if "://" in files or Path(files).is_absolute() else str(base / files)
        if isinstance(files, list):
            return [beside(f) for f in files]
        if isinstance(files, dict):
            return {k: beside(f) for k, f in files.items()}
        return files

    value = dict(value)
    if "data_files" in value:
        value["data_files"] = beside(value["data_files"])
    return value


def _metric_callable(spec: str, folder: Path, where: str) -> Callable[[list, list], float]:
    """The user's metric function, named as `module:function` (importable) or `file.py:function`
    (relative to the task file). It is the user's own code, run as they asked; nothing is fetched."""
    source, _, name = spec.rpartition(":")
    try:
        if source.endswith(".py"):
            file = (folder / source).resolve()
            if not file.is_file():
                raise FlareError(f"{where}: metric file {file} not found")
            loader = importlib.util.spec_from_file_location(f"flare_user_metric_{file.stem}", file)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
    except FlareError:
        raise
    except Exception as error:  # the user's module failed to import: say which and why, in one line
        raise FlareError(f"{where}: metric {spec!r} could not be loaded ({described(error)})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise FlareError(f"{where}: metric {spec!r}: {source} has no function {name!r}")
    return function


def _evaluate_metric(
    metric: str, spec: dict[str, Any], folder: Path, where: str, task_type: str, n_labels: int
) -> Callable[[list, list], float]:
    """`evaluate:NAME[#KEY]` as a metric function: loaded with `evaluate.load` now (a Hub name, or a
    local script or folder relative to the task file) and tried on a small sample of the task's
    prediction format, so an unknown metric, a wrong key or a wrong input type fails before any work."""
    source, _, key = metric.removeprefix("evaluate:").partition("#")
    args, scale = spec.get("metric_args") or {}, spec.get("metric_scale", 100)
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise FlareError(f"{where}: metric_args must map compute() argument names to values")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise FlareError(f"{where}: metric_scale must be a number, got {scale!r}")
    if not source:
        raise FlareError(f"{where}: metric {metric!r}: name the metric, as in evaluate:accuracy")
    try:
        evaluate = extras.require("evaluate")
    except FlareError as error:
        raise FlareError(f"{where}: metric {metric!r}: {error}") from None
    target, local = source, Path(source).expanduser()
    local = local if local.is_absolute() else folder / local
    if source.endswith(".py") or source.startswith((".", "/", "~")) or local.exists():
        if not local.exists():
            raise FlareError(f"{where}: metric {metric!r}: {local} not found")
        target = str(local.resolve())
    try:
        module = evaluate.load(target, keep_in_memory=True)
    except Exception as error:  # unknown name, Hub unreachable, a broken script: one line
        raise FlareError(
            f"{where}: metric {metric!r}: evaluate could not load {source!r} ({described(error)})"
        ) from None
    names = (module.name, Path(source.rstrip("/")).stem)

    def compute(predictions: list, references: list) -> float:
        if task_type == "classification":
            predictions = [-1 if p is None else p for p in predictions]
        else:
            predictions = ["" if p is None else str(p) for p in predictions]
            references = [list(r["text"]) for r in references]
        try:
            result = module.compute(predictions=predictions, references=references, **args)
        except Exception as error:
            raise FlareError(f"metric {metric!r}: {described(error)}") from None
        if isinstance(result, dict):
            chosen = key or next((k for k in names if k in result), None) or (
                next(iter(result)) if len(result) == 1 else None
            )
            if chosen not in result:
                raise FlareError(
                    f"metric {metric!r} returns {', '.join(map(str, result))}: pick one as evaluate:{source}#KEY"
                )
            result = result[chosen]
        elif key:
            raise FlareError(f"metric {metric!r}: returns one value, not a dict with key {key!r}")
        try:
            return float(result) * scale
        except (TypeError, ValueError):
            raise FlareError(f"metric {metric!r}: returned {result!r:.60}, not a number") from None

    if task_type == "classification":
        sample: tuple[list, list] = (list(range(n_labels)), list(range(n_labels)))
    else:
        gold = [{"text": ["a b c"], "answer_start": [0]}, {"text": ["d e"], "answer_start": [0]}]
        sample = (["a b c", "d e f"], gold)
    try:
        compute(*sample)
    except FlareError as error:
        raise FlareError(f"{where}: {error} (tried on a sample of this task's predictions)") from None
    return compute
