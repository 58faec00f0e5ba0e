"""A custom task names its own metric as a Python callable; scores and studies report it."""

import shutil
from pathlib import Path

import pytest

from flare.errors import FlareError
from flare.evaluate import score
from flare.tasks import get_task

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tasks"


def _task(tmp_path, metric: str, code: str | None = None):
    shutil.copytree(EXAMPLE / "toy_sentiment", tmp_path / "toy_sentiment")
    text = (EXAMPLE / "toy_sentiment.yaml").read_text(encoding="utf-8")
    text = text.replace("metric: macro_f1", f"metric: {metric!r}")
    (tmp_path / "task.yaml").write_text(text, encoding="utf-8")
    if code is not None:
        (tmp_path / "my_metrics.py").write_text(code, encoding="utf-8")
    return get_task(str(tmp_path / "task.yaml"))


RECALL = """
def positive_recall(predictions, references):
    hits = [p == r for p, r in zip(predictions, references) if r == 1]
    return 100.0 * sum(hits) / len(hits)
"""


def test_a_python_file_metric_is_the_task_metric(tmp_path):
    task = _task(tmp_path, "my_metrics.py:positive_recall", RECALL)
    assert task.metric == "my_metrics.py:positive_recall"
    pairs = task.load_pairs("test", "de")
    predictions = {p.target.id: 1 for p in pairs}  # "positive" everywhere: perfect recall, half accuracy
    metrics = score(task, predictions, pairs, "flare")
    assert metrics[task.metric] == 100.0 and metrics["accuracy"] == 50.0


def test_an_importable_metric_by_module_name(tmp_path):
    task = _task(tmp_path, "statistics:fmean")  # any importable callable: here a mean of the predictions
    pairs = task.load_pairs("test", "de")
    metrics = score(task, {p.target.id: 1 for p in pairs}, pairs, "flare")
    assert metrics["statistics:fmean"] == 1.0


@pytest.mark.parametrize(("metric", "code", "message"), [
    ("missing.py:f", None, "metric file .*missing.py not found"),
    ("my_metrics.py:nothing", RECALL, "has no function 'nothing'"),
    ("my_metrics.py:f", "raise RuntimeError('boom')\n", r"could not be loaded \(RuntimeError: boom\)"),
    ("no_such_module_xyz:f", None, "could not be loaded"),
    ("recall", None, "must be one of accuracy, macro_f1, or 'module:function'"),
])
def test_bad_metric_specs_are_one_line_errors(tmp_path, metric, code, message):
    with pytest.raises(FlareError, match=message) as error:
        _task(tmp_path, metric, code)
    assert "\n" not in str(error.value)


def test_a_task_reads_its_rows_through_datasets_load_dataset(tmp_path):
    shutil.copytree(EXAMPLE / "toy_sentiment", tmp_path / "toy_sentiment")
    text = (EXAMPLE / "toy_sentiment.yaml").read_text(encoding="utf-8")
    text = text.replace('files: "toy_sentiment/{split}-{language}.csv"',
                        'dataset: {path: csv, data_files: "toy_sentiment/{split}-{language}.csv", split: train}')
    (tmp_path / "task.yaml").write_text(text, encoding="utf-8")
    from_datasets = get_task(str(tmp_path / "task.yaml"))
    from_files = get_task(str(EXAMPLE / "toy_sentiment.yaml"))
    assert from_datasets.dataset is not None and from_datasets.split_roles == from_files.split_roles
    for split in ("train", "valid", "test"):
        assert from_datasets.load_pairs(split, "de") == from_files.load_pairs(split, "de")
    bad = text.replace("toy_sentiment/{split}", "missing/{split}")
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(FlareError, match=r"dataset csv split train could not be loaded") as error:
        get_task(str(tmp_path / "bad.yaml")).load("test", "de")
    assert "\n" not in str(error.value)
    both = text.replace("dataset:", 'files: "x"\ndataset:')
    (tmp_path / "both.yaml").write_text(both, encoding="utf-8")
    with pytest.raises(FlareError, match=r"give 'files' .* or 'dataset'"):
        get_task(str(tmp_path / "both.yaml"))
