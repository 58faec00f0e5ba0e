"""One adapter for many target languages (issue 38): the sampler's proportions, a joint study end to
end with leave-one-out, predicting mixed-language input, and the adapter card's languages."""

import dataclasses
import json
import random
from types import SimpleNamespace

import pytest
import torch

from flare.adapter.card import card_languages
from flare.cli import main
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.study.pipeline import compare
from flare.study.predict import predict_texts
from flare.study.runs import plan
from flare.study.sampling import LanguageMix, epoch_counts, language_shares
from flare.study.settings import DataSettings, JointSettings, StageSettings, Study
from flare.study.training import fit
from tiny_models import save_encoder

# ----------------------------------------------------------------- the sampler


def _pools(sizes):
    return {language: [f"{language}{i}" for i in range(n)] for language, n in sizes.items()}


@pytest.mark.parametrize("draw", range(20))
def test_epoch_counts_follow_the_shares_and_add_up(draw):
    rng = random.Random(draw)
    sizes = {f"l{i}": rng.randint(1, 500) for i in range(rng.randint(1, 11))}
    total = sum(sizes.values())
    proportional = language_shares(sizes, "proportional")
    assert all(abs(proportional[k] - n / total) < 1e-12 for k, n in sizes.items())
    tempered = language_shares(sizes, "temperature", 5.0)
    norm = sum(n ** 0.2 for n in sizes.values())
    assert all(abs(tempered[k] - n ** 0.2 / norm) < 1e-12 for k, n in sizes.items())
    # a smaller language never gets a smaller share under temperature than proportionally, a larger one no larger
    smallest, largest = min(sizes, key=sizes.get), max(sizes, key=sizes.get)
    assert tempered[smallest] >= proportional[smallest] - 1e-12 and tempered[largest] <= proportional[largest] + 1e-12
    size = rng.randint(1, 3000)
    for shares in (proportional, tempered):
        counts = epoch_counts(shares, size)
        assert sum(counts.values()) == size
        assert all(abs(counts[k] - size * shares[k]) < 1 for k in sizes)


def test_a_proportional_epoch_of_default_size_is_every_example_once():
    pools = _pools({"jav": 7, "sun": 30, "ace": 2})
    mix = LanguageMix.build(pools, "proportional", 5.0, 0, seed=3)
    assert len(mix) == 39
    for epoch in range(3):
        assert sorted(mix.epoch(epoch)) == sorted(x for pool in pools.values() for x in pool)


def test_temperature_epochs_are_deterministic_per_seed_and_repeat_nothing_before_a_pool_is_used_up():
    pools = _pools({"jav": 5, "sun": 200})
    mix = LanguageMix.build(pools, "temperature", 5.0, 0, seed=1)
    counts = mix.counts
    assert sum(counts.values()) == 205 and counts["jav"] > 5  # the small language is up-sampled
    expected = round(205 * 5 ** 0.2 / (5 ** 0.2 + 200 ** 0.2))
    assert abs(counts["jav"] - expected) <= 1
    first = mix.epoch(0)
    assert first == LanguageMix.build(pools, "temperature", 5.0, 0, seed=1).epoch(0)  # the seed decides
    assert first != mix.epoch(1) and first != LanguageMix.build(pools, "temperature", 5.0, 0, seed=2).epoch(0)
    jav = [x for x in first if x.startswith("jav")]
    for start in range(0, len(jav) - 4, 5):  # each block of 5 is a full permutation of the 5 examples
        assert sorted(jav[start:start + 5]) == sorted(pools["jav"])
    sun = [x for x in first if x.startswith("sun")]
    assert len(set(sun)) == len(sun)  # down-sampled: no repeats


def test_an_empty_language_is_refused():
    with pytest.raises(FlareError, match="no training examples for sun"):
        LanguageMix.build({"jav": ["a"], "sun": []}, "temperature", 5.0, 0, seed=1)


class _Line(torch.nn.Module):
    """y = a x + b fitted by squared error: a model `fit` can train in milliseconds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, x, y):
        return SimpleNamespace(loss=((self.linear(x) - y) ** 2).mean())


def test_an_interrupted_joint_training_resumes_to_the_same_weights(tmp_path):
    pools = {"jav": [(i / 10, 3 * i / 10 + 1) for i in range(6)], "sun": [(i / 10, 3 * i / 10 + 1) for i in range(20)]}
    mix = LanguageMix.build(pools, "temperature", 5.0, 0, seed=3)

    def collate(items):
        return {"x": torch.tensor([[x] for x, _ in items]), "y": torch.tensor([[y] for _, y in items])}

    settings = StageSettings(epochs=3, batch_size=4, learning_rate=0.05, warmup_ratio=0.0)

    def trained(run_dir, stop=None):
        model = _Line()
        fit(model, mix, collate, settings, seed=3, run_dir=run_dir, stop_after_steps=stop)
        return [p.detach().clone() for p in model.parameters()]

    straight = trained(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        trained(tmp_path / "resumed", stop=9)  # in epoch 2 (7 steps per epoch): epoch 1 is checkpointed
    assert all(torch.equal(a, b) for a, b in zip(straight, trained(tmp_path / "resumed"), strict=True))


# ----------------------------------------------------------------- a joint study


def _texts(data_dir):
    task = get_task("nusax")
    words = ["Sentiment", ":", "negative", "neutral", "positive"]
    return words + [e.fields["text"] for lang in ("eng", "jav", "sun") for split in ("train", "valid", "test")
                    for e in task.load(split, lang, data_dir)[:16]]


def _study(model, out, data_dir, **overrides) -> Study:
    stage = StageSettings(epochs=1, batch_size=8, learning_rate=2e-3, eval_batch_size=16)
    values = dict(task="nusax", model=str(model), languages=["jav", "sun"], methods=["translate-train", "flare"],
                  fusions=["add_relu"], seeds=[1], output_dir=str(out),
                  joint=JointSettings(training=["per-language", "joint"], held_out=["sun"]),
                  data=DataSettings(data_dir=str(data_dir), max_train=8, max_valid=4, max_test=4, max_length=24),
                  stage1=stage, stage2=stage)
    return Study(**{**values, **overrides})


def test_a_joint_study_scores_each_language_leaves_one_out_and_predicts_mixed_input(
        tmp_path, data_dir, capsys, monkeypatch):
    study = _study(save_encoder(tmp_path / "encoder", _texts(data_dir)), tmp_path / "study", data_dir)
    records = [json.loads(line) for line in compare(study).read_text().splitlines()]
    runs = {(r["method"], r["language"], r["joint"], r["held_out"]): r for r in records}
    per_language = {(m, lang, False, None) for m in study.methods for lang in study.languages}
    joint = {(m, lang, True, None) for m in study.methods for lang in study.languages}
    held_out = {(m, "sun", True, "sun") for m in study.methods}
    assert set(runs) == per_language | joint | held_out and len(records) == len(plan(study)) == 10
    assert all(r["n_test"] == 4 and r["metric"] == "macro_f1" for r in records)
    flare_joint = runs[("flare", "jav", True, None)]
    assert flare_joint["label"] == "FLARE (add_relu) [joint]" and flare_joint["joint_languages"] == ["jav", "sun"]
    assert flare_joint["joint_epoch_counts"] == {"jav": 8, "sun": 8}  # equal sizes: equal shares, 16 per epoch
    assert runs[("flare", "sun", True, None)]["steps"] == flare_joint["steps"] == 2  # one training, scored twice
    loo = runs[("translate-train", "sun", True, "sun")]
    assert loo["label"] == "translate-train (LoRA) [joint, held out]" and loo["joint_languages"] == ["jav"]
    root = tmp_path / "study" / "runs"
    assert card_languages(root / "flare-add_relu/joint/seed1/adapter") == ["jav", "sun"]
    assert card_languages(root / "flare-add_relu/joint-without-sun/seed1/adapter") == ["jav"]
    assert card_languages(root / "flare-add_relu/jav/seed1/adapter") == ["jav"]
    report = (tmp_path / "study" / "results.md").read_text()
    for row in ("| FLARE (add_relu) [joint] |", "| FLARE (add_relu) [joint, held out] |",
                "| FLARE (add_relu) [joint] | FLARE (add_relu) |", "Paired difference vs translate-train (LoRA)"):
        assert row in report, row

    # a rerun has nothing to do; a study that gained a language refuses the joint adapter trained without it
    compare(study)
    assert len((tmp_path / "study" / "results.jsonl").read_text().splitlines()) == 10
    with pytest.raises(FlareError, match="joint/seed1: this joint adapter was trained on jav, sun but"):
        compare(dataclasses.replace(study, languages=["jav", "sun", "ace"]))

    # predict: rows of both languages through the joint adapter; a language it lacks only when allowed
    texts, english = ["Aku seneng banget", "Abdi resep pisan"], ["I am very happy", "I like it a lot"]
    assert len(predict_texts(study, ["jav", "sun"], texts, english, joint=True)) == 2
    with pytest.raises(FlareError, match=r"input 1 is in ace, which .* was not trained on"):
        predict_texts(study, ["jav", "ace"], texts, english, joint=True)
    details = []
    predict_texts(study, ["jav", "ace"], texts, english, joint=True, allow_other_languages=True, details=details)
    assert [d["language"] for d in details] == ["jav", "ace"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t, "english_text": e, "language": lang}) + "\n"
                            for t, e, lang in zip(texts, english, ["sun", "jav"])), encoding="utf-8")
    capsys.readouterr()
    config = str(tmp_path / "study" / "study.yaml")
    assert main(["predict", config, "--text", str(rows), "--joint_adapter", "true", "--output", "jsonl"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["id"], row["language"]) for row in out] == [(0, "sun"), (1, "jav")]

    # evaluate --adapter_dir: the joint adapter on either language, recorded nowhere
    assert main(["evaluate", config, "--language", "sun", "--method", "flare",
                 "--adapter_dir", str(root / "flare-add_relu/joint/seed1/adapter")]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["n_test"] == 4
    assert len((tmp_path / "study" / "results.jsonl").read_text().splitlines()) == 10


def test_the_readme_joint_settings_make_the_runs_it_describes():
    """Mirrors docs/studies.md's YAML block under "One adapter for many languages" (its bash block is
    mirrored by the predict and evaluate calls of the study test above)."""
    from pathlib import Path

    from flare.files import load_yaml
    from flare.study.settings import from_dict

    guide = (Path(__file__).resolve().parents[2] / "docs" / "studies.md").read_text(encoding="utf-8")
    block = guide.split("## One adapter for many languages", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    study = from_dict(Study, {"task": "nusax", **load_yaml(block, "docs/studies.md")}).validate()
    scopes = [(run.method, run.language, run.scope) for run in plan(study)]
    assert len(scopes) == 14  # 3 languages x 2 methods x (per-language, joint), and ace left out by both
    assert [s for s in scopes if s[2] == "held-out"] == [("translate-train", "ace", "held-out"),
                                                       ("flare", "ace", "held-out")]
    assert study.joint.sampling == "temperature" and study.joint.temperature == 5.0
