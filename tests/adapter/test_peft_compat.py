"""FLARE as a transformers / TRL / Hub citizen: Trainer with default arguments trains with the
English side, evaluates, checkpoints the adapter only and resumes; TRL's SFTTrainer fine-tunes a
decoder with FLARE; push_to_hub uploads the sidecar and a real model card; a Hub id loads."""

import json

import huggingface_hub
import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from transformers import DataCollatorWithPadding, EvalPrediction, Trainer, TrainingArguments

import tiny_models as tiny
import tiny_tokenizers
from flare import FlareConfig, FlareError, FlareModel, get_flare_model, load_flare_model
from flare.adapter.collate import SourceCollator


def _llama(fusion="add_relu", name_or_path=None):
    backbone = tiny.llama()
    if name_or_path:
        backbone.config._name_or_path = name_or_path
    model = get_flare_model(backbone, FlareConfig(target_modules="all-linear", task_type="CAUSAL_LM", fusion=fusion))
    tiny.randomize_lora_B(model)
    return model


def _dataset(n=8, english=True):
    ids, mask = tiny.batch(n, 6, seed=0, pad_right=2)
    columns = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    if english:
        columns["source_input_ids"], columns["source_attention_mask"] = tiny.batch(n, 7, seed=1, pad_left=1)
    return Dataset.from_dict({k: v.tolist() for k, v in columns.items()})


def _arguments(tmp_path, **overrides):
    # everything else default, remove_unused_columns=True included
    settings = dict(per_device_train_batch_size=4, learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no")
    return TrainingArguments(str(tmp_path), **{**settings, **overrides})


def _lora_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_trainer_with_default_arguments_trains_with_the_english_side(tmp_path, monkeypatch):
    seen = []
    forward = FlareModel.forward
    monkeypatch.setattr(FlareModel, "forward", lambda self, *a, **k: seen.append(set(k)) or forward(self, *a, **k))
    args = _arguments(tmp_path, max_steps=2)
    assert args.remove_unused_columns
    model = _llama()
    trainer = Trainer(model=model, args=args, train_dataset=_dataset(), eval_dataset=_dataset())
    fused = trainer.train().training_loss
    assert {"source_input_ids", "source_attention_mask", "input_ids", "labels"} <= seen[0]
    evaluation = trainer.evaluate()
    assert torch.isfinite(torch.tensor(evaluation["eval_loss"]))

    plain_model = _llama()
    plain = Trainer(model=plain_model, args=args, train_dataset=_dataset(english=False)).train().training_loss
    assert abs(fused - plain) > 1e-4
    trained, plain_trained = _lora_weights(model), _lora_weights(plain_model)
    assert any(not torch.allclose(trained[n], plain_trained[n]) for n in plain_trained)


def test_trainer_evaluates_a_classifier_with_compute_metrics_and_no_label_names(tmp_path):
    texts = ["kula chakula kizuri", "sipendi mvua", "habari", "kitabu hiki ni kizuri sana", "hapana", "ndiyo bwana"]
    english = ["eat good food", "I do not like rain", "hello there", "this book is very good", "no", "yes sir"]
    tokenizer = tiny_tokenizers.encoder_tokenizer(texts + english)
    model = get_flare_model(tiny.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS"))
    tiny.randomize_lora_B(model)
    target, source = tokenizer(texts), tokenizer(english)
    labels = [0, 1, 2, 0, 1, 2]
    data = Dataset.from_dict({**target, "labels": labels, "source_input_ids": source["input_ids"],
                              "source_attention_mask": source["attention_mask"]})
    collator = SourceCollator(DataCollatorWithPadding(tokenizer), tokenizer.pad_token_id, padding_side="right")
    received = {}

    def accuracy(prediction: EvalPrediction):
        received["labels"] = prediction.label_ids.tolist()
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=_arguments(tmp_path, per_device_eval_batch_size=6), eval_dataset=data,
                      data_collator=collator, compute_metrics=accuracy)
    metrics = trainer.evaluate()
    assert received["labels"] == labels
    batch = collator([data[i] for i in range(6)])
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(logits, plain)
    assert metrics["eval_accuracy"] == pytest.approx(float((logits.argmax(-1) == torch.tensor(labels)).float().mean()))
    assert metrics["eval_loss"] == pytest.approx(loss.item(), rel=1e-4)  # the fused loss, not plain LoRA's


def test_trainer_checkpoints_hold_the_adapter_load_and_resume(tmp_path):
    data = _dataset()
    args = dict(max_steps=4, save_strategy="steps", save_steps=2)
    full_model = _llama(fusion="cross_attention")
    full = Trainer(model=full_model, args=_arguments(tmp_path / "full", **args), train_dataset=data)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-4"
    files = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "flare_config.json", "flare_weights.safetensors", "README.md"} <= files
    assert "model.safetensors" not in files  # the adapter, not the backbone
    backbone_bytes = sum(p.numel() * p.element_size() for p in tiny.llama().parameters())
    assert (checkpoint / "adapter_model.safetensors").stat().st_size < backbone_bytes / 2

    loaded = load_flare_model(tiny.llama(), checkpoint)
    ids, mask = tiny.batch(2, 6, seed=3)
    src, _ = tiny.batch(2, 6, seed=4)
    full_model.eval()
    with torch.no_grad():
        expected = full_model(ids, mask, source_input_ids=src).logits
        assert torch.equal(loaded(ids, mask, source_input_ids=src).logits, expected)

    resumed_model = _llama(fusion="cross_attention")
    resumed = Trainer(model=resumed_model, args=_arguments(tmp_path / "full", **args), train_dataset=data)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    expected = _lora_weights(full_model)
    got = _lora_weights(resumed_model)
    assert got.keys() == expected.keys() and any("fusion_modules" in n for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


TEXTS = ["habari ya asubuhi", "ninapenda chai", "jina langu ni Amina", "asante sana rafiki"]
ENGLISH = ["good morning", "I like tea", "my name is Amina", "thank you very much friend"]


def _sft(tmp_path, english: bool, remove_unused_columns: bool = False):
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = tiny_tokenizers.decoder_tokenizer(TEXTS + ENGLISH)
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = get_flare_model(tiny.llama(vocab_size=len(tokenizer)),
                            FlareConfig(target_modules="all-linear", task_type="CAUSAL_LM"))
    tiny.randomize_lora_B(model)
    data = Dataset.from_dict({"text": TEXTS * 2, "english": ENGLISH * 2})
    data = data.map(lambda b: {"source_input_ids": tokenizer(b["english"])["input_ids"]}, batched=True,
                    remove_columns=["english"])
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    if english:
        collator = SourceCollator(collator, pad_token_id=tokenizer.pad_token_id, padding_side="left")
    config = SFTConfig(str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, report_to=[],
                       use_cpu=True, save_strategy="no", remove_unused_columns=remove_unused_columns)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         data_collator=collator)
    return trainer, model


def test_trl_sft_trainer_fine_tunes_a_decoder_with_flare(tmp_path, monkeypatch):
    seen = []
    forward = FlareModel.forward
    monkeypatch.setattr(FlareModel, "forward", lambda self, *a, **k: seen.append(set(k)) or forward(self, *a, **k))
    trainer, model = _sft(tmp_path / "fused", english=True)
    assert trainer.model is model and isinstance(model, PeftModel)
    fused = trainer.train().training_loss
    assert "source_input_ids" in seen[0] and "source_attention_mask" in seen[0]
    plain_trainer, _ = _sft(tmp_path / "plain", english=False)
    assert abs(fused - plain_trainer.train().training_loss) > 1e-4


def test_trl_dropping_the_english_column_is_an_error_not_plain_lora(tmp_path):
    trainer, _ = _sft(tmp_path, english=True, remove_unused_columns=True)
    with pytest.raises(FlareError, match="remove_unused_columns=False"):
        trainer.train()


def _capture_upload(monkeypatch):
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in sorted(folder_path.iterdir())}
        uploads.append({"repo_id": repo_id, "files": files, **kwargs})
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def test_push_to_hub_uploads_the_sidecar_and_a_model_card(monkeypatch):
    uploads = _capture_upload(monkeypatch)
    model = _llama(fusion="cross_attention", name_or_path="example/tiny-llama")
    assert model.push_to_hub("someone/flare-sw", languages=["sw", "en"], scores={"accuracy": 71.25}) == "commit"
    (upload,) = uploads
    assert upload["repo_id"] == "someone/flare-sw"
    files = upload["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "flare_config.json", "flare_weights.safetensors",
            "README.md"} <= set(files)
    assert json.loads(files["flare_config.json"])["config"]["fusion"] == "cross_attention"
    card = files["README.md"].decode()
    for expected in ("base_model: example/tiny-llama", "- sw", "cross_attention", "source_input_ids",
                     "| accuracy | 71.25 |", "flare.load_flare_model",
                     'LlamaForCausalLM.from_pretrained("example/tiny-llama")'):
        assert expected in card, expected


@pytest.mark.parametrize("bad", [{"scores": {"accuracy": "high"}}, {"languages": "sw"}, {"private": True, "tags": 1}])
def test_push_to_hub_refuses_bad_input_before_uploading(monkeypatch, bad):
    uploads = _capture_upload(monkeypatch)
    with pytest.raises(FlareError):
        _llama().push_to_hub("someone/flare-sw", **bad)
    assert uploads == []


def test_a_hub_id_loads_from_the_local_cache_offline(tmp_path, monkeypatch):
    model = _llama(fusion="cross_attention").eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--flare-sw"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ids, _ = tiny.batch(2, 6, seed=0)
    src, _ = tiny.batch(2, 6, seed=1)
    for loaded in (load_flare_model(tiny.llama(), "someone/flare-sw"),
                   FlareModel.from_pretrained(tiny.llama(), "someone/flare-sw")):
        assert isinstance(loaded, FlareModel) and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(ids, source_input_ids=src).logits, model(ids, source_input_ids=src).logits)
    with pytest.raises(FlareError, match="cannot be fetched from the Hub"):
        load_flare_model(tiny.llama(), "someone/not-cached")


def test_source_collator_pads_the_english_side():
    examples = [{"input_ids": [5, 6, 7], "source_input_ids": [8, 9]}, {"input_ids": [5], "source_input_ids": [4, 3, 2]}]

    def inner(rows):
        return {"n": len(rows), "keys": sorted({k for r in rows for k in r})}

    batch = SourceCollator(inner, pad_token_id=1, padding_side="left")(examples)
    assert batch["keys"] == ["input_ids"] and batch["n"] == 2
    assert batch["source_input_ids"].tolist() == [[1, 8, 9], [4, 3, 2]]
    assert batch["source_attention_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    with pytest.raises(FlareError, match="same English-side fields"):
        SourceCollator(inner, pad_token_id=1, padding_side="right")([examples[0], {"input_ids": [5]}])
