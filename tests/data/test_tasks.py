"""The task registry and custom YAML tasks (end to end on a tiny CSV task)."""

from pathlib import Path

import pytest
import yaml

from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.formats import PairFormatter
from flare.hf.metrics import compute_metrics
from tiny_tokenizers import decoder_tokenizer  # tiny tokenizer built from a word list

EXAMPLE_YAML = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "toy_sentiment.yaml"


def test_builtin_contracts():
    xnli, nusax, tydiqa = get_task("xnli"), get_task("NusaX"), get_task("tydiqa")
    assert (xnli.type, xnli.metric, xnli.source_language) == ("classification", "accuracy", "en")
    assert xnli.labels == ["entailment", "neutral", "contradiction"]
    assert xnli.text_fields == ["premise", "hypothesis"] and len(xnli.languages) == 15
    assert xnli.splits["de"] == ["dev", "test"] and "train" in xnli.splits["en"]
    assert (nusax.metric, nusax.source_language, nusax.labels) == (
        "macro_f1", "eng", ["negative", "neutral", "positive"]
    )
    assert nusax.languages == ["ace", "ban", "bbc", "bjn", "bug", "eng", "ind", "jav", "mad", "min", "nij", "sun"]
    assert len(nusax.target_languages) == 11 and nusax.text_fields == ["text"]
    assert (tydiqa.type, tydiqa.metric, tydiqa.labels) == ("qa", "f1", [])
    assert tydiqa.text_fields == ["question", "context"] and tydiqa.splits["ar"] == ["dev"]
    assert tydiqa.splits["ko"] == ["train", "dev"] and "exact_match_paper_compat" in tydiqa.metrics


def test_tasks_are_independent_copies():
    task = get_task("xnli")
    task.splits["de"].append("train")
    assert "train" not in get_task("xnli").splits["de"]


def test_unknown_task():
    with pytest.raises(FlareError, match="unknown task 'mnli'"):
        get_task("mnli")
    with pytest.raises(FlareError, match="task file not found"):
        get_task("nowhere/task.yaml")


def test_example_yaml_task_end_to_end():
    task = get_task(str(EXAMPLE_YAML))
    assert (task.name, task.type, task.metric, task.labels) == (
        "toy_sentiment", "classification", "macro_f1", ["negative", "positive"]
    )
    assert task.splits == {"en": ["train", "valid", "test"], "de": ["train", "valid", "test"]}
    train = task.load("train", "en")
    assert [ex.label for ex in train] == [1, 0] * 12 and train[0].id == "t0"
    assert len(task.load_pairs("train", "de")) == 24 and len(task.load_pairs("valid", "de")) == 8
    test_pairs = task.load_pairs("test", "de")
    pairs = test_pairs[:4]
    assert len(test_pairs) == 8 and all(p.kind == "gold" and p.source.id == p.target.id for p in pairs)
    assert pairs[1].target.fields["text"].startswith("Der Zug")

    tok = decoder_tokenizer(
        [ex.fields["text"] for p in pairs for ex in (p.source, p.target)] + ["Review:", "Sentiment:", "bad", "good"]
    )
    batch = PairFormatter(task, tok, "decoder")(pairs)
    assert batch["input_ids"].shape == batch["source_input_ids"].shape
    good = tok(" good", add_special_tokens=False)["input_ids"]
    assert batch["labels"][0, -2:].tolist() == [*good, tok.eos_token_id]  # e0 is positive -> "good"
    predictions = [p.target.label for p in pairs]
    predictions[0] = 0
    scores = compute_metrics(task.type, predictions, [p.target.label for p in pairs])
    assert scores["accuracy"] == 75.0


def write_task(tmp_path: Path, body: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "task.yaml"
    path.write_text(body, encoding="utf-8")
    return path


BASE = "name: t\ntype: classification\nlanguages: [en, fr]\nlabels: [neg, pos]\n"


def test_custom_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"t": ["yes it is", "no"], "label": ["pos", "neg"]}), tmp_path / "fr.parquet")
    path = write_task(
        tmp_path, BASE + "columns: {text: t}\nfiles: {test: {en: en.jsonl, fr: fr.parquet}}\nparallel: true\n",
        {"en.jsonl": '{"t": "yes", "label": "pos"}\n{"t": "no way", "label": "neg"}\n'},
    )
    task = get_task(path)
    assert task.pair_by == "row" and task.split_roles["test"] == "test"
    pairs = task.load_pairs("test", "fr")
    assert [(p.source.fields["text"], p.target.fields["text"], p.target.label) for p in pairs] == [
        ("yes", "yes it is", 1), ("no way", "no", 0),
    ]


def test_custom_qa_csv(tmp_path):
    csv_text = 'question,context,ans,start\nWho?,Ann met Bob.,Bob,8\nWhere?,In Paris.,Paris,3\n'
    path = write_task(
        tmp_path,
        "name: q\ntype: qa\nlanguages: [en]\nanswer_text_column: ans\nanswer_start_column: start\n"
        "files: '{split}.csv'\nsplits: [dev]\n",
        {"dev.csv": csv_text},
    )
    task = get_task(path)
    assert task.metric == "f1" and task.encoder_fields == ["question", "context"]
    examples = task.load("dev", "en")
    assert examples[1].answers == {"text": ["Paris"], "answer_start": [3]} and examples[1].id == "1"
    (tmp_path / "dev.csv").write_text(csv_text.replace("Paris,3", "Paris,4"), encoding="utf-8")
    with pytest.raises(FlareError, match=r"dev.csv: row 2: answer 0 'Paris' does not match"):
        task.load("dev", "en")


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        (BASE + "files: x.csv\nsplits: [test]\ncolour: red\n", "unknown key(s) colour"),
        (BASE.replace("[neg, pos]", "[no, yes]") + "files: x.csv\nsplits: [test]\n", "quote"),
        ("name: t\ntype: classification\nlanguages: [en]\nlabels: [a, b]\n", "give 'files' (local files) or 'dataset'"),
        (BASE.replace("classification", "regression") + "files: x.csv\nsplits: [test]\n", "'type' must be"),
        (BASE.replace("[neg, pos]", "[pos]") + "files: x.csv\nsplits: [test]\n", "at least two labels"),
        (BASE + "files: x.csv\n", "'splits' must list"),
        (BASE + "files: {test: {de: x.csv}}\n", "language 'de'"),
        (BASE + "files: x.csv\nsplits: [test]\nprompt: {body: '{sentence}'}\n", "unknown placeholder"),
        (BASE + "files: x.csv\nsplits: [test]\nmetric: bleu\n", "metric 'bleu'"),
        (BASE + "files: x.csv\nsplits: [test]\nlabel_map: {'2': maybe}\n", "unknown label 'maybe'"),
        (
            "name: t\ntype: qa\nlanguages: [en]\ntext_fields: [text]\nfiles: x.csv\nsplits: [test]\n",
            "[question, context]",
        ),
    ],
)
def test_bad_yaml(tmp_path, yaml_text, message):
    path = write_task(tmp_path, yaml_text, {})
    with pytest.raises(FlareError) as err:
        get_task(path)
    assert message in str(err.value) and "\n" not in str(err.value) and "task.yaml" in str(err.value)


def test_custom_missing_file_and_missing_column(tmp_path):
    path = write_task(tmp_path, BASE + "files: '{language}.csv'\nsplits: [test]\n", {"en.csv": "text,lbl\nhi,pos\n"})
    task = get_task(path)
    with pytest.raises(FlareError, match=r"fr\.csv"):
        task.load("test", "fr")
    with pytest.raises(FlareError, match=r"en.csv: missing column\(s\) label \(found: text, lbl\)"):
        task.load("test", "en")


def test_a_task_made_in_python_is_the_task_its_yaml_makes(tmp_path):
    """`flare.task_from_dict` takes a task YAML's keys: with `files` it is that YAML's task; without
    files it describes data held in Python and refuses, in one line, to read a split."""
    import flare
    from flare.data.custom_task import task_from_yaml

    path = Path("examples/tasks/toy_sentiment.yaml").resolve()
    spec = yaml.safe_load(path.read_text())
    from_python, from_yaml = flare.task_from_dict(spec, path.parent), task_from_yaml(path)
    assert from_python.files == from_yaml.files and from_python.labels == from_yaml.labels
    assert from_python.load("test", from_python.languages[-1]) == from_yaml.load("test", from_yaml.languages[-1])
    described = flare.task_from_dict({"name": "mine", "type": "classification", "languages": ["en", "sw"],
                                      "labels": ["no", "yes"]})
    assert described.splits == {"en": [], "sw": []} and described.encoder_fields == ["text"]
    with pytest.raises(FlareError, match="task mine has no split 'train' for sw") as error:
        described.load("train", "sw")
    assert "\n" not in str(error.value)
    with pytest.raises(FlareError, match="task: unknown key\\(s\\) lables"):
        flare.task_from_dict({"name": "mine", "type": "classification", "languages": ["en"], "lables": ["a"]})
    with pytest.raises(FlareError, match="a task must be a mapping"):
        flare.task_from_dict(["name"])
