"""Experiment tracking through accelerate's trackers: what a stage logs, and a tracker whose package
is missing refused in the plan, before stage 1 trains."""

import importlib.util

import pytest
import torch

import tiny_models as tiny
from flare import FlareConfig, FlareError
from flare.hf.loading import adapt
from flare.study.settings import StageSettings, Study, from_dict
from flare.study.training import fit


def _fit(tmp_path, **settings):
    model = adapt(tiny.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS"))
    generator = torch.Generator().manual_seed(0)
    items = [(torch.randint(3, tiny.VOCAB, (6,), generator=generator), i % 3) for i in range(8)]

    def collate(batch):
        return {"input_ids": torch.stack([ids for ids, _ in batch]), "labels": torch.tensor([y for _, y in batch])}

    stage = StageSettings(epochs=2, batch_size=4, learning_rate=1e-2, **settings)
    return fit(model, items, collate, stage, seed=1, run_dir=tmp_path, description="tracked",
               evaluate=lambda m: 50.0)


def test_tensorboard_tracker_logs_loss_learning_rate_and_validation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit(tmp_path, log_with=["tensorboard"])
    (events,) = (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "valid/score"} <= tags
    assert [e.value for e in accumulator.Scalars("valid/score")] == [50.0, 50.0]
    assert len(accumulator.Scalars("train/loss")) == 4  # 2 epochs x 2 steps


def test_no_tracker_by_default_writes_no_tracker_files(tmp_path):
    _fit(tmp_path)
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "train_log.csv").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_a_tracker_without_its_package_is_refused_before_any_work(tmp_path):
    study = from_dict(Study, {"output_dir": str(tmp_path / "out"), "stage2": {"log_with": ["mlflow"]}})
    with pytest.raises(FlareError, match=r"stage2.log_with: the mlflow tracker needs the mlflow package"):
        study.validate()
    with pytest.raises(FlareError, match="log_with\\[0\\]: 'neptune' is not one of tensorboard, wandb"):
        from_dict(Study, {"stage1": {"log_with": ["neptune"]}})
    assert not (tmp_path / "out").exists()
