"""`flare analyze` on a tiny study: the per-layer numbers are those of the models' own hidden states,
the three models read the pairs as documented, results resume, and bad input is one line, exit 2."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from flare.cli import main
from flare.hf.alignment import mean_pool, paired_cosine, retrieval_accuracy
from flare.study.analyze import analyze
from flare.study.pipeline import compare
from flare.study.settings import study_to_dict
from tiny_study import save_tiny_encoder, toy_study, write_toy_task

pytestmark = pytest.mark.slow  # trains a tiny study (about 10 s on 2 cores)


def _two_language_task(folder: Path) -> Path:
    """The toy task plus "nl": the German rows with their words reversed (known to the tokenizer)."""
    path = write_toy_task(folder)
    for split in ("train", "valid", "test"):
        rows = list(csv.reader((folder / "toy" / f"{split}-de.csv").open(encoding="utf-8")))
        with open(folder / "toy" / f"{split}-nl.csv", "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *([i, " ".join(t.split()[::-1]), y] for i, t, y in rows[1:])])
    path.write_text(path.read_text(encoding="utf-8").replace("[en, de]", "[en, de, nl]"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    model = save_tiny_encoder(root / "encoder")
    study = toy_study(model, root / "study", task=str(_two_language_task(root / "task2")), languages=["de", "nl"],
                      methods=["translate-train", "flare"])
    compare(study)
    (root / "study.yaml").write_text(yaml.safe_dump(study_to_dict(study)), encoding="utf-8")
    return root, study


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_analysis_of_a_study_writes_tables_figures_and_the_cross_language_plot(study_folder, capsys):
    root, study = study_folder
    # docs/studies.md: `flare analyze study.yaml`
    assert main(["analyze", str(root / "study.yaml"), "--min_pairs", "4"]) == 0
    folder = Path(study.output_dir) / "analysis"
    paths = {"csv": folder / "alignment.csv", "markdown": folder / "alignment.md",
             "png_de": folder / "alignment-de.png", "png_nl": folder / "alignment-nl.png",
             "png_cross": folder / "alignment-vs-gain.png"}
    rows = _rows(paths["csv"])
    layers = 3  # embeddings + 2 layers
    assert len(rows) == 2 * 3 * layers
    assert {(r["language"], r["model"]) for r in rows} == {(lang, m) for lang in ("de", "nl")
                                                             for m in ("base", "lora", "flare")}
    assert all(r["n_pairs"] == "4" for r in rows)
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "Spearman's rho" in text and "| nl |" in text
    for key in ("png_de", "png_nl", "png_cross"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
    # the base model's numbers are those of its own hidden states on the formatter's two sides
    from flare.data.tasks import get_task
    from flare.hf.formats import FormatSettings, PairFormatter
    from flare.hf.loading import load_backbone

    task = get_task(study.task)
    backbone, tokenizer, family = load_backbone(str(Path(study.output_dir) / "stage1" / "model"), task)
    pairs = task.load_pairs("test", "de", None, None, "gold")
    formatter = PairFormatter(task, tokenizer, family, "flare", FormatSettings(max_length=24))
    batch = formatter.collate(formatter.features(pairs, train=False))
    with torch.no_grad():
        target = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          output_hidden_states=True).hidden_states
        english = backbone(input_ids=batch["source_input_ids"], attention_mask=batch["source_attention_mask"],
                           output_hidden_states=True).hidden_states
    base = [r for r in rows if r["model"] == "base" and r["language"] == "de"]
    for layer, row in enumerate(base):
        t = mean_pool(target[layer], batch["attention_mask"])
        e = mean_pool(english[layer], batch["source_attention_mask"])
        assert float(row["cosine"]) == pytest.approx(paired_cosine(t, e), abs=1e-5)
        assert (float(row["retrieval_to_english"]), float(row["retrieval_to_target"])) == pytest.approx(
            retrieval_accuracy(t, e))
    # FLARE's fused target side differs from LoRA's and the base's past the embeddings
    cosine = {(r["model"], int(r["layer"])): float(r["cosine"]) for r in rows if r["language"] == "de"}
    assert cosine[("flare", 0)] == pytest.approx(cosine[("base", 0)], abs=1e-6)  # embeddings carry no adapter
    assert cosine[("flare", layers - 1)] != pytest.approx(cosine[("lora", layers - 1)], abs=1e-6)
    capsys.readouterr()
    # a rerun computes nothing; a result saved with other settings is recomputed alone
    analyze(study, min_pairs=4)
    assert "6 (model, language) results already saved, 0 to go" in capsys.readouterr().out
    part = Path(study.output_dir) / "analysis" / "parts" / "lora" / "nl.json"
    saved = json.loads(part.read_text(encoding="utf-8"))
    part.write_text(json.dumps({**saved, "settings": {**saved["settings"], "split": "valid"}}), encoding="utf-8")
    analyze(study, min_pairs=4)
    assert "5 (model, language) results already saved, 1 to go" in capsys.readouterr().out
    assert json.loads(part.read_text(encoding="utf-8")) == saved


@pytest.mark.parametrize(("args", "message"), [
    (["--languages", "[de]"], "needs at least 2 target languages"),
    (["--seed", "7"], "needs its saved adapter"),
    (["--min_pairs", "5"], "fewer than min_pairs 5"),
    (["--fusion", "mul", "--min_pairs", "4"], "lacks FLARE (mul)"),
    (["--models", "[nope]"], "nope"),
    (["--results", "elsewhere/results.jsonl"], "elsewhere/results.jsonl is missing"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(study_folder, capsys, args, message):
    root, study = study_folder
    before = sorted(p.name for p in (Path(study.output_dir) / "analysis").rglob("*")) if (
        Path(study.output_dir) / "analysis").exists() else []
    assert main(["analyze", str(root / "study.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    after = sorted(p.name for p in (Path(study.output_dir) / "analysis").rglob("*")) if (
        Path(study.output_dir) / "analysis").exists() else []
    assert after == before


def test_a_model_without_a_study_is_analysed_alone(study_folder, tmp_path):
    root, study = study_folder
    fresh = toy_study(root / "encoder", tmp_path / "new", task=study.task, languages=["de"])
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study_to_dict(fresh)), encoding="utf-8")
    # docs/studies.md: `flare analyze study.yaml --languages [jav,sun] --models [base] --cross_language false`
    assert main(["analyze", str(tmp_path / "study.yaml"), "--languages", "[de,nl]", "--models", "[base]",
                 "--cross_language", "false", "--min_pairs", "4"]) == 0
    folder = tmp_path / "new" / "analysis"
    assert {(r["model"], r["language"]) for r in _rows(folder / "alignment.csv")} == {("base", "de"), ("base", "nl")}
    assert not (folder / "alignment-vs-gain.png").exists() and (folder / "alignment-nl.png").is_file()
    with pytest.raises(Exception, match="holds no stage-1 model"):
        analyze(fresh, models=["flare"], min_pairs=4, cross_language=False)
