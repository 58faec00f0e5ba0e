"""Stage 2's English-state cache (issue 36) in whole studies: with the cache in memory, spilled to
disk, or off, a run's training losses, chosen epoch, adapter and scores are the same bit for bit;
the budgets hold; a run that must not cache says so in one line."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import flare.adapter.english_cache as english_cache
import flare.study.pipeline as pipeline
from flare.cli import main
from flare.study.pipeline import compare
from flare.study.settings import AdapterSettings, DataSettings, StageSettings, study_to_dict
from tiny_study import save_tiny_encoder, save_tiny_llama, toy_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A toy study's stage-1 encoder model, shared by every study below (they differ in stage 2 only)."""
    root = tmp_path_factory.mktemp("cache_stage1")
    compare(toy_study(save_tiny_encoder(root / "encoder"), root / "study", methods=["zero-shot"]))
    return root / "study" / "stage1" / "model"


def _run(model, out: Path, cache: str, ram_mib: int = 64, disk_mib: int = 64, **overrides) -> dict:
    values = dict(epochs=2, batch_size=4, learning_rate=3e-3, eval_batch_size=3, tensorboard=False)
    stage = StageSettings(**{**values, **overrides.pop("stage", {})})
    data = DataSettings(max_length=24, english_cache=cache, english_cache_ram_mib=ram_mib,
                        english_cache_disk_mib=disk_mib)
    overrides = {"methods": ["flare"], "stage1_model": str(model), **overrides}
    study = toy_study(model, out, stage1=replace(stage, epochs=1), stage2=stage, data=data, **overrides)
    compare(study)
    return _outcome(out)


def _outcome(out: Path) -> dict:
    """What a run leaves that the cache must not change: its record (but its timing), its per-epoch
    training losses and validation scores, and the saved adapter's bytes."""
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    run = next((out / "runs").glob("flare-*/de/seed1"))
    log = _log(run)
    adapter = {p.name: p.read_bytes() for p in sorted((run / "adapter").glob("*.safetensors"))}
    kept = {k: record[k] for k in ("score", "metrics", "valid_score", "best_epoch", "steps", "predicted_classes")}
    return {"record": kept, "log": log, "adapter": adapter, "spill_left": (out / "english_cache").exists()}


def _log(run: Path) -> list[dict]:
    """The run's per-epoch training log without its timing column."""
    with open(run / "train_log.csv", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


DROPOUT = AdapterSettings(lora_dropout=0.2)


@pytest.fixture(scope="module")
def uncached(stage1, tmp_path_factory):
    return _run(stage1, tmp_path_factory.mktemp("uncached") / "off", "off", adapter=DROPOUT)


def test_cache_in_memory_on_disk_or_off_trains_and_scores_bit_identically(stage1, uncached, tmp_path, monkeypatch):
    """lora_dropout > 0: dropout acts on the cached inputs inside the fusion, with the same draws."""
    adapter, off = DROPOUT, uncached
    computed = []
    original = english_cache.EnglishStateCache._compute
    monkeypatch.setattr(english_cache.EnglishStateCache, "_compute",
                        lambda self, model, ids, *a: computed.append(len(a[2])) or original(self, model, ids, *a))
    memory = _run(stage1, tmp_path / "memory", "on", adapter=adapter)
    # 16 training, 4 validation and 4 test examples: each English pass ran once, not once per epoch
    assert sum(computed) == 24
    computed.clear()
    monkeypatch.setattr(english_cache, "SHARD_BYTES", 1)  # one shard per spilled batch
    disk = _run(stage1, tmp_path / "disk", "on", ram_mib=0, adapter=adapter)
    assert sum(computed) == 24
    assert off["log"][0]["train_loss"] != off["log"][-1]["train_loss"]  # it trained
    assert memory == off and disk == off
    assert not disk["spill_left"]  # the spill serves only the command's own runs and their resumption


def test_gradient_checkpointing_on_a_decoder_and_resumption_match_the_uncached_run(tmp_path, monkeypatch):
    """A decoder (left-padded English with answer positions), gradient checkpointing and dropout; the
    cached study is interrupted mid-epoch 2 and resumed from its checkpoint and its spilled states."""
    llama = save_tiny_llama(tmp_path / "llama")
    settings = dict(adapter=AdapterSettings(lora_dropout=0.1), stage={"gradient_checkpointing": True})
    off = _run(llama, tmp_path / "off", "off", **settings, stage1_model=None)
    monkeypatch.setattr(english_cache, "SHARD_BYTES", 1)
    stage1_model = str(tmp_path / "off" / "stage1" / "model")
    original_fit = pipeline.fit

    def interrupted(*args, **kwargs):
        return original_fit(*args, **kwargs, stop_after_steps=5)  # epoch 1 has 4 steps

    monkeypatch.setattr(pipeline, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(llama, tmp_path / "resumed", "on", ram_mib=0, **settings, stage1_model=stage1_model)
    spill = tmp_path / "resumed" / "english_cache"
    assert any(spill.glob("*.safetensors"))
    monkeypatch.setattr(pipeline, "fit", original_fit)
    reused = []
    original_open = english_cache.EnglishStateCache._open_spilled
    monkeypatch.setattr(english_cache.EnglishStateCache, "_open_spilled",
                        lambda self: original_open(self) or reused.append(len(self._on_disk)))
    resumed = _run(llama, tmp_path / "resumed", "on", ram_mib=0, **settings, stage1_model=stage1_model)
    assert reused and reused[0] > 0  # the states the interrupted process spilled
    assert resumed["record"] == off["record"] and resumed["adapter"] == off["adapter"]
    assert resumed["log"] == off["log"]


def test_a_studys_runs_share_the_english_passes_and_score_as_without_the_cache(stage1, tmp_path, monkeypatch):
    """Two seeds read the same English sentences through the same stage-1 backbone: the second run
    reuses every state of the first (in memory, and spilled to disk), and both runs train and score
    bit for bit as with the cache off."""
    computed = []
    original = english_cache.EnglishStateCache._compute
    monkeypatch.setattr(english_cache.EnglishStateCache, "_compute",
                        lambda self, model, ids, *a: computed.append(len(a[2])) or original(self, model, ids, *a))
    outcomes = {}
    for cache, ram_mib in (("off", 64), ("on", 64), ("on", 0)):
        out = tmp_path / f"{cache}{ram_mib}"
        monkeypatch.setattr(english_cache, "SHARD_BYTES", 1 << 20 if ram_mib else 1)
        computed.clear()
        _run(stage1, out, cache, ram_mib=ram_mib, seeds=[1, 2], adapter=DROPOUT)
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        passes = [r["english_passes"] for r in records]
        if cache == "on":
            assert sum(computed) == 24  # 16 training, 4 validation, 4 test examples: once for the study
            assert passes[0]["computed"] == 24 and passes[1] == {"computed": 0, "reused": passes[0]["reused"] + 24}
        else:
            assert sum(computed) == passes[0]["computed"] + passes[1]["computed"] > 48
        logs = [_log(next((out / "runs").glob(f"flare-*/de/seed{seed}"))) for seed in (1, 2)]
        kept = [{k: r[k] for k in ("score", "metrics", "valid_score", "best_epoch", "steps")} for r in records]
        outcomes[(cache, ram_mib)] = (kept, logs)
        assert not (out / "english_cache").exists()
    assert outcomes[("on", 64)] == outcomes[("off", 64)] == outcomes[("on", 0)]
    assert outcomes[("off", 64)][1][0] != outcomes[("off", 64)][1][1]  # the seeds trained differently


def test_flare_mt_is_unchanged_by_the_setting(tmp_path, tmp_path_factory, stage1):
    """FLARE-MT fuses MT-encoder states, which a study already computes once (data.mt_inputs)."""
    from tiny_mt import shared_tiny_nllb

    mt = shared_tiny_nllb(tmp_path_factory)
    runs = [_run(stage1, tmp_path / cache, cache, methods=["flare-mt"], mt_model=str(mt), stage={"epochs": 1})
            for cache in ("off", "on")]
    assert runs[0] == runs[1]


def test_states_over_both_budgets(stage1, uncached, tmp_path, capsys):
    """auto: a one-line note and the same results; on: one line, exit 2, before the run trains."""
    auto = _run(stage1, tmp_path / "auto", "auto", ram_mib=0, disk_mib=0, adapter=DROPOUT)
    assert "note: this run's English states take" in capsys.readouterr().out
    assert auto == uncached
    config = tmp_path / "study.yaml"
    study = toy_study(stage1, tmp_path / "on", methods=["flare"], stage1_model=str(stage1))
    data = replace(study.data, english_cache="on", english_cache_ram_mib=0, english_cache_disk_mib=0)
    study = replace(study, data=data)
    config.write_text(yaml.safe_dump(study_to_dict(study)))
    capsys.readouterr()
    assert main(["compare", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.english_cache" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "on").glob("runs/flare-*/de/seed1/adapter"))
