"""Tiny studies on a toy English -> German sentiment task written on the fly (a custom task, see
flare/data/custom_task.py): they need neither the shared datasets nor the Hub, so they also run on a
bare GPU machine."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, XLMRobertaConfig, XLMRobertaModel

from flare.study.settings import DataSettings, StageSettings, Study
from tiny_tokenizers import decoder_tokenizer, encoder_tokenizer

# (English, German, label): 24 rows cut into train 16, valid 4, test 4
_ROWS = [
    ("The food was wonderful.", "Das Essen war wunderbar.", 1),
    ("The soup was cold.", "Die Suppe war kalt.", 0),
    ("The staff were friendly.", "Das Personal war freundlich.", 1),
    ("The room was dirty.", "Das Zimmer war schmutzig.", 0),
    ("A lovely quiet hotel.", "Ein schönes ruhiges Hotel.", 1),
    ("The train was late.", "Der Zug war verspätet.", 0),
    ("Great coffee and cake.", "Toller Kaffee und Kuchen.", 1),
    ("The service was rude.", "Der Service war unhöflich.", 0),
    ("We loved the view.", "Wir liebten die Aussicht.", 1),
    ("The bed was too hard.", "Das Bett war zu hart.", 0),
    ("Clean and cheap.", "Sauber und günstig.", 1),
    ("The music was too loud.", "Die Musik war zu laut.", 0),
    ("A perfect evening.", "Ein perfekter Abend.", 1),
    ("Nobody apologised.", "Niemand entschuldigte sich.", 0),
    ("The breakfast was delicious.", "Das Frühstück war köstlich.", 1),
    ("We waited an hour.", "Wir warteten eine Stunde.", 0),
    ("Friendly owners.", "Freundliche Besitzer.", 1),
    ("The bread was stale.", "Das Brot war alt.", 0),
    ("Fresh and tasty fish.", "Frischer und leckerer Fisch.", 1),
    ("The shower was broken.", "Die Dusche war kaputt.", 0),
    ("The garden is beautiful.", "Der Garten ist schön.", 1),
    ("Far too expensive.", "Viel zu teuer.", 0),
    ("I would come again.", "Ich würde wiederkommen.", 1),
    ("Never again.", "Nie wieder.", 0),
]
_SPLITS = {"train": _ROWS[:16], "valid": _ROWS[16:20], "test": _ROWS[20:]}
_TASK = """name: toy_sentiment
type: classification
languages: [en, de]
source_language: en
labels: [negative, positive]
label_map: {"0": negative, "1": positive}
text_fields: [text]
columns: {text: sentence}
id_column: id
label_column: label
files: "toy/{split}-{language}.csv"
splits: [train, valid, test]
parallel: true
pair_by: id
metric: macro_f1
prompt: {body: "Review: {text}", cue: "Sentiment:"}
verbalizer: [bad, good]
"""


def write_toy_task(folder: Path) -> Path:
    """The task YAML (and its CSVs beside it); pass the path as a study's task."""
    (folder / "toy").mkdir(parents=True, exist_ok=True)
    for split, rows in _SPLITS.items():
        for column, language in ((0, "en"), (1, "de")):
            with open(folder / "toy" / f"{split}-{language}.csv", "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "sentence", "label"])
                writer.writerows((f"{split}{i}", row[column], row[2]) for i, row in enumerate(rows))
    (folder / "toy_sentiment.yaml").write_text(_TASK, encoding="utf-8")
    return folder / "toy_sentiment.yaml"


def toy_texts() -> list[str]:
    words = ["Sentiment", ":", "Sentiment:", "Review", "Review:", "bad", "good", "negative", "positive"]
    return words + [text for row in _ROWS for text in row[:2]]


def save_tiny_encoder(path: Path, seed: int = 0) -> Path:
    tokenizer = encoder_tokenizer(toy_texts())
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, pad_token_id=0, max_position_embeddings=80)
    XLMRobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_llama(path: Path, seed: int = 0, hidden: int = 64) -> Path:
    """64 wide: bitsandbytes quantises in blocks of 64, so 4-bit tests see real blocks."""
    tokenizer = decoder_tokenizer(toy_texts())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, bos_token_id=1,
                         eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def toy_study(model: Path, out: Path, **overrides) -> Study:
    """A study of the toy task (written into `out`'s parent folder) with the tiny model at `model`."""
    task = write_toy_task(Path(out).parent / "task")
    stage = StageSettings(epochs=1, batch_size=8, learning_rate=2e-3, eval_batch_size=8, tensorboard=False)
    values = dict(task=str(task), model=str(model), languages=["de"], methods=["zero-shot", "flare"],
                  fusions=["add_relu"], seeds=[1], output_dir=str(out), data=DataSettings(max_length=24),
                  stage1=stage, stage2=stage)
    return Study(**{**values, **overrides})
