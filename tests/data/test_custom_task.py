"""A custom task names its own metric (a Python callable or a Hugging Face `evaluate` metric);
scores and studies report it."""

import shutil
from pathlib import Path

import pytest

from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.scoring import score

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tasks"


def _task(tmp_path, metric: str, code: str | None = None, extra: str = ""):
    shutil.copytree(EXAMPLE / "toy_sentiment", tmp_path / "toy_sentiment")
    text = (EXAMPLE / "toy_sentiment.yaml").read_text(encoding="utf-8")
    text = text.replace("metric: macro_f1", f"metric: {metric!r}") + extra
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
    ("recall", None, "must be one of accuracy, macro_f1, or 'module:function' or 'evaluate:NAME'"),
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


# A metric script for the Hugging Face `evaluate` library, as a user writes one (the Hub is not needed)
EVALUATE_METRIC = """
import datasets
import evaluate


class MyMetrics(evaluate.Metric):
    def _info(self):
        value = datasets.Value(KIND)
        return evaluate.MetricInfo(
            description="hits", citation="", inputs_description="",
            features=datasets.Features({"predictions": value, "references": VALUE}),
        )

    def _compute(self, predictions, references, offset=0):
        hits = [HIT for p, r in zip(predictions, references)]
        return {"my_metrics": sum(hits) / len(hits) + offset, "count": len(hits)}
"""
# `p >= 0` fails on None: an unparseable prediction must arrive as -1, a label id no class has
CLASSIFICATION_METRIC = (
    EVALUATE_METRIC.replace("KIND", '"int64"').replace("VALUE", "value").replace("HIT", "p >= 0 and p == r")
)


def _hand_accuracy(pairs, predictions):
    return 100.0 * sum(predictions[p.target.id] == p.target.label for p in pairs) / len(pairs)


def test_an_evaluate_metric_script_beside_the_task_is_the_task_metric(tmp_path):
    task = _task(tmp_path, "evaluate:./my_metrics.py", CLASSIFICATION_METRIC)
    assert task.metric == "evaluate:./my_metrics.py" and task.metric in task.metrics
    pairs = task.load_pairs("test", "de")
    predictions = {p.target.id: int(i % 3 > 0) for i, p in enumerate(pairs)}
    predictions[pairs[0].target.id] = None  # an unparseable generation: always wrong
    expected = _hand_accuracy(pairs, predictions)
    assert 0 < expected < 100
    metrics = score(task, predictions, pairs, "flare")
    # the key named like the metric, scaled from evaluate's 0..1 to the built-ins' 0..100
    assert metrics[task.metric] == pytest.approx(expected) == pytest.approx(metrics["accuracy"])


def test_an_evaluate_metric_key_args_and_scale(tmp_path):
    extra = "metric_args: {offset: 1}\nmetric_scale: 1\n"
    task = _task(tmp_path, "evaluate:my_metrics.py#count", CLASSIFICATION_METRIC, extra)
    pairs = task.load_pairs("test", "de")
    assert score(task, {p.target.id: 1 for p in pairs}, pairs, "flare")[task.metric] == len(pairs)
    (tmp_path / "folder").mkdir()  # a task file elsewhere: the metric path resolves beside it
    (tmp_path / "folder" / "task.yaml").write_text(
        (tmp_path / "task.yaml").read_text(encoding="utf-8").replace("toy_sentiment/", "../toy_sentiment/")
        .replace("my_metrics.py#count", "../my_metrics.py"), encoding="utf-8")
    task = get_task(str(tmp_path / "folder" / "task.yaml"))
    predictions = {p.target.id: 1 for p in pairs}
    assert score(task, predictions, pairs, "flare")[task.metric] == _hand_accuracy(pairs, predictions) / 100 + 1


def test_an_evaluate_metric_for_qa_gets_strings_and_gold_answer_lists(tmp_path):
    code = EVALUATE_METRIC.replace("KIND", '"string"').replace("VALUE", "datasets.Sequence(value)")
    (tmp_path / "exact.py").write_text(code.replace("HIT", "p in r"), encoding="utf-8")
    (tmp_path / "dev.csv").write_text(
        "question,context,ans,start\nWho?,Ann met Bob.,Bob,8\nWhere?,In Paris.,Paris,3\n"
        "When?,At noon.,noon,3\n", encoding="utf-8")
    (tmp_path / "qa.yaml").write_text(
        "name: q\ntype: qa\nlanguages: [en]\nanswer_text_column: ans\nanswer_start_column: start\n"
        "files: '{split}.csv'\nsplits: [dev]\nmetric: 'evaluate:./exact.py#my_metrics'\n", encoding="utf-8")
    task = get_task(str(tmp_path / "qa.yaml"))
    examples = task.load("dev", "en")
    predictions = {examples[0].id: "Bob", examples[1].id: "in Paris", examples[2].id: "noon"}
    assert score(task, predictions, examples, "flare")[task.metric] == pytest.approx(200 / 3)


@pytest.mark.parametrize(("metric", "extra", "message"), [
    ("evaluate:no_such_metric_xyz", "", "evaluate could not load 'no_such_metric_xyz'"),
    ("evaluate:./missing.py", "", r"missing.py not found"),
    ("evaluate:./my_metrics.py#f1", "", r"returns my_metrics, count: pick one as evaluate:./my_metrics.py#KEY"),
    ("evaluate:./my_metrics.py", "metric_args: {beta: 2}\n", r"unexpected keyword argument 'beta'.*on a sample"),
    ("evaluate:./my_metrics.py", "metric_scale: lots\n", "metric_scale must be a number"),
    ("macro_f1", "metric_scale: 1\n", "apply only to 'evaluate:' metrics"),
])
def test_bad_evaluate_metrics_fail_when_the_task_is_read_in_one_line(tmp_path, monkeypatch, metric, extra, message):
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)  # never wait on the Hub
    with pytest.raises(FlareError, match=message) as error:
        _task(tmp_path, metric, CLASSIFICATION_METRIC, extra)
    assert "\n" not in str(error.value) and "task.yaml" in str(error.value)


def test_an_evaluate_metric_without_the_package_names_the_extra(tmp_path, monkeypatch):
    from flare import extras

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name, *a: None if name == "evaluate" else real(name))
    with pytest.raises(FlareError, match=r"needs the optional package evaluate: pip install 'flare-xlt\[metrics\]'"):
        _task(tmp_path, "evaluate:accuracy")
