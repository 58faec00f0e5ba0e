"""Extractive QA through the whole pipeline: TyDiQA-GoldP with machine pairs read from translation
files (identity "translations" in the translation step's format stand in for NLLB here)."""

import json

import pytest
import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

from flare.data.parallel_data import write_translations
from flare.data.tasks import get_task
from flare.study.pipeline import compare
from flare.study.settings import DataSettings, StageSettings, Study
from tiny_tokenizers import encoder_tokenizer

N = 12


@pytest.fixture(scope="module")
def qa_setup(tmp_path_factory, data_dir):
    task = get_task("tydiqa")
    english = task.load("train", "en", data_dir)[:N]
    swahili = task.load("dev", "sw", data_dir)[:N]
    root = tmp_path_factory.mktemp("tydiqa")

    def rows(examples):
        return [
            {"id": e.id, "question": e.fields["question"], "context": e.fields["context"], "answers": e.answers}
            for e in examples
        ]

    write_translations(root / "translations", "tydiqa", "train", "en", "sw", rows(english), {"model": "identity"})
    write_translations(root / "translations", "tydiqa", "dev", "sw", "en", rows(swahili), {"model": "identity"})
    tok = encoder_tokenizer([t for e in english + swahili for t in e.fields.values()])
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, pad_token_id=0, max_position_embeddings=130)
    XLMRobertaModel(config).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root


@pytest.mark.slow
def test_tydiqa_study_scores_squad_em_and_f1_per_method(qa_setup, data_dir, tmp_path):
    stage = StageSettings(epochs=1, batch_size=8, learning_rate=2e-3, eval_batch_size=8, tensorboard=False)
    study = Study(task="tydiqa", model=str(qa_setup / "model"), languages=["sw"],
                  methods=["zero-shot", "translate-test", "translate-train", "input-fusion", "flare"], seeds=[1],
                  output_dir=str(tmp_path / "study"), stage1=stage, stage2=stage,
                  data=DataSettings(data_dir=str(data_dir), translations_dir=str(qa_setup / "translations"),
                                    source="machine", train_split="train", valid_split="", valid_size=4,
                                    test_split="dev", max_train=8, max_test=N, max_length=48))
    records = [json.loads(line) for line in compare(study).read_text().splitlines()]
    assert {r["method"] for r in records} == set(study.methods)
    for record in records:
        assert record["metric"] == "f1" and record["n_test"] == N
        assert {"exact_match", "f1", "exact_match_paper_compat"} <= set(record["metrics"])
        assert 0 <= record["metrics"]["exact_match"] <= record["metrics"]["f1"] <= 100
    # test rows without a translation are skipped and counted in every run record, never silently lost
    untranslated = len(get_task("tydiqa").load("dev", "sw", data_dir)) - N
    assert all(r["test_skipped"] == {"missing_translation": untranslated} for r in records)
