"""`flare download` against a stand-in Hub: the files land in the layout the local readers read,
and reading them gives the examples the Hub gave; existing files are kept (an interrupted download
continues); a Hub that cannot be reached fails at once, naming FLARE_DATA_DIR."""

from __future__ import annotations

import socket

import datasets
import pytest

from flare.cli import main
from flare.data import download as fetching
from flare.data import hub
from flare.data.tasks import get_task
from flare.errors import FlareError

NUSAX = {"train": 6, "validation": 3, "test": 4}


def _fake_hub(path, config=None, split=None, **_):
    """What the Hub's three datasets look like, a few rows each (their real columns and ClassLabels)."""
    if path == "indonlp/NusaX-senti":
        rows = NUSAX[split]
        labels = datasets.ClassLabel(names=["negative", "neutral", "positive"])
        text = datasets.Value("string")
        features = datasets.Features({"id": text, "text": text, "label": labels})
        return datasets.Dataset.from_dict(
            {"id": [str(i) for i in range(rows)], "text": [f"{config} kalimat, {i}" for i in range(rows)],
             "label": [i % 3 for i in range(rows)]}, features=features)
    if path == "facebook/xnli":
        labels = datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": labels})
        return datasets.Dataset.from_dict(
            {"premise": [f"{config} premise\twith a tab {i}" for i in range(5)],
             "hypothesis": [f"hypothesis\n{i}" for i in range(5)], "label": [i % 3 for i in range(5)]},
            features=features)
    if path == "google-research-datasets/tydiqa":
        contexts = ["Nairobi ni mji mkuu wa Kenya.", "Paris is the capital of France."]
        return datasets.Dataset.from_list([
            {"id": f"{prefix}-{split}-{i}", "title": "t", "question": "Mji mkuu?", "context": contexts[i % 2],
             "answers": {"text": [contexts[i % 2].split()[0]], "answer_start": [0]}}
            for prefix in hub.TYDIQA_PREFIX.values() for i in range(3)
        ])
    raise AssertionError(f"unexpected dataset {path}")


@pytest.fixture
def fake_hub(monkeypatch):
    calls: list[tuple] = []

    def load_dataset(path, config=None, split=None, **kwargs):
        calls.append((path, config, split))
        return _fake_hub(path, config, split, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(hub, "check_hub_reachable", lambda what: None)
    monkeypatch.setattr(fetching, "check_hub_reachable", lambda what: None)
    return calls


@pytest.mark.parametrize("task_name", ["nusax", "xnli", "tydiqa"])
def test_downloaded_files_read_back_as_the_hub_examples(fake_hub, tmp_path, task_name):
    task = get_task(task_name)
    language = {"nusax": "jav", "xnli": "sw", "tydiqa": "sw"}[task_name]
    fetching.download(tmp_path, [task_name], [language])
    for split in task.splits[language]:
        assert task.local_path(split, language, tmp_path) == fetching.target_file(task, split, language, tmp_path)
        local = task.load(split, language, tmp_path)
        remote = hub.load_from_hub(task_name, split, language, task.labels)
        if task_name == "xnli":  # the XTREME layout has no quoting: tabs and line breaks become spaces
            for example in remote:
                example.fields.update({k: " ".join(v.split()) for k, v in example.fields.items()})
        key = (lambda e: (e.fields, e.label, e.answers)) if task_name == "xnli" else (lambda e: e)
        assert [key(e) for e in local] == [key(e) for e in remote] and local


def test_existing_files_are_kept_and_only_missing_ones_fetched(fake_hub, tmp_path):
    fetching.download(tmp_path, ["nusax"], ["jav"])
    assert len(fake_hub) == 3
    (tmp_path / "nusax-senti/jav/test.csv").unlink()
    kept = (tmp_path / "nusax-senti/jav/train.csv").stat().st_mtime_ns
    fake_hub.clear()
    fetching.download(tmp_path, ["nusax"], ["jav"])
    assert fake_hub == [("indonlp/NusaX-senti", "jav", "test")]
    assert (tmp_path / "nusax-senti/jav/train.csv").stat().st_mtime_ns == kept
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_command_fills_a_folder_the_tasks_read(fake_hub, tmp_path, capsys):
    assert main(["download", "--data_dir", str(tmp_path), "--tasks", "[nusax, xnli]", "--languages", "[jav, en]"]) == 0
    assert (tmp_path / "nusax-senti/jav/valid.csv").is_file() and (tmp_path / "xnli/train-en.tsv").is_file()
    assert (tmp_path / "xnli/test-labeled/test-en.tsv").is_file() and not (tmp_path / "tydiqa-goldp").exists()


@pytest.mark.parametrize("args,message", [
    (["--tasks", "[xnli]", "--languages", "[xx]"], "download: language 'xx' is in none of the tasks xnli"),
    (["--tasks", "[nusax, xnli]", "--languages", "[jav, xx]"],
     "download: language 'xx' is in none of the tasks nusax, xnli"),
    (["--tasks", "[nusax, xnli]", "--languages", "[jav]"], "download: xnli has none of the languages jav"),
])
def test_bad_requests_are_refused_before_any_download(fake_hub, tmp_path, capsys, args, message):
    assert main(["download", "--data_dir", str(tmp_path / "data"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"flare: error: {message}"
    assert fake_hub == [] and not (tmp_path / "data").exists()


def test_an_unreachable_hub_fails_at_once_naming_the_data_variable(monkeypatch, tmp_path):
    for name in ("FLARE_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the Hub was tried"))
    with pytest.raises(FlareError, match=r"cannot be reached; set FLARE_DATA_DIR") as error:
        get_task("nusax").load("test", "jav", None)
    assert "\n" not in str(error.value)
    with pytest.raises(FlareError, match=r"download: not on disk, and the Hugging Face Hub"):
        fetching.download(tmp_path, ["nusax"], ["jav"])
