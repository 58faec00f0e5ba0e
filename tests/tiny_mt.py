"""Build a tiny random NLLB-style translation model (M2M100 architecture) with a real SentencePiece
tokenizer, so tests run the true transformers code path without downloading anything.

Usage: ``path = build_tiny_nllb(tmp_dir, data_dir)``; the folder loads with
``AutoTokenizer.from_pretrained(path)`` and ``AutoModelForSeq2SeqLM.from_pretrained(path)``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from flare.data.locations import BUNDLED_DATA_DIR, expected_data_dir
from flare.mt.languages import LANGUAGES

# Every FLORES code of the project table, plus one the table does not use (for override tests).
DEFAULT_LANGUAGE_CODES = sorted({entry.flores for entry in LANGUAGES.values() if entry.flores} | {"zsm_Latn"})

def training_sentences(data_dir: Path | None, limit: int = 150) -> list[str]:
    """A few hundred sentences from NusaX (eng, jav, ind, sun) and XNLI en; without the datasets
    folder, the English and Javanese NusaX slice bundled in the package (a tokenizer trained on a
    handful of sentences has too few pieces, and the tiny model then emits only empty strings)."""
    sentences: list[str] = []
    table = Path(data_dir) / "nusax-mt" / "train.csv" if data_dir else None
    if table is not None and table.is_file():
        with open(table, encoding="utf-8") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                if i >= limit:
                    break
                sentences += [row["english"], row["javanese"], row["indonesian"], row["sundanese"]]
    xnli = Path(data_dir) / "xnli" / "dev-en.tsv" if data_dir else None
    if xnli is not None and xnli.is_file():
        with open(xnli, encoding="utf-8") as handle:
            sentences += [line.split("\t")[0] for _, line in zip(range(limit), handle)]
    if sentences:
        return sentences
    for language in ("eng", "jav"):
        with open(BUNDLED_DATA_DIR / "nusax-senti" / language / "train.csv", encoding="utf-8") as handle:
            sentences += [row["text"] for _, row in zip(range(2 * limit), csv.DictReader(handle))]
    return sentences


def _train_spm(spm_dir: Path, data_dir: Path | None, vocab_size: int) -> Path:
    import sentencepiece as spm

    spm_dir.mkdir(parents=True, exist_ok=True)
    # NLLB's and M2M100's order of the four special pieces: <s>=0 <pad>=1 </s>=2 <unk>=3.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences(data_dir)), model_prefix=str(spm_dir / "sentencepiece.bpe"),
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0,
        bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2,
    )
    return spm_dir / "sentencepiece.bpe.model"


def _save_random_model(out_dir: Path, vocab_size: int, d_model: int, seed: int, init_std: float) -> None:
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    torch.manual_seed(seed)
    config = M2M100Config(
        vocab_size=vocab_size, d_model=d_model, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, dropout=0.0, scale_embedding=True, init_std=init_std,
    )
    M2M100ForConditionalGeneration(config).save_pretrained(out_dir)


def build_tiny_nllb(
    out_dir: Path, data_dir: Path | None = None, language_codes: list[str] | None = None,
    vocab_size: int = 300, d_model: int = 32, seed: int = 0, init_std: float = 0.3,
) -> Path:
    """Write a tiny random M2M100ForConditionalGeneration and an NllbTokenizer to ``out_dir``.
    ``init_std`` is large enough that different inputs give different (random) outputs."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    spm_dir = _train_spm(out_dir / "spm", data_dir, vocab_size).parent
    codes = language_codes or DEFAULT_LANGUAGE_CODES
    config = {"tokenizer_class": "NllbTokenizer", "additional_special_tokens": codes, "src_lang": "eng_Latn"}
    (spm_dir / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(spm_dir)
    tokenizer.save_pretrained(out_dir)  # writes tokenizer.json: later loads skip the conversion
    _save_random_model(out_dir, len(tokenizer), d_model, seed, init_std)
    return out_dir


def build_tiny_m2m100(out_dir: Path, data_dir: Path | None = None, vocab_size: int = 300) -> Path:
    """The same with an M2M100Tokenizer (language tags ``__en__``, ``__jv__``... of M2M100)."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    model_file = _train_spm(out_dir / "spm", data_dir, vocab_size)
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {pieces.id_to_piece(i): i for i in range(pieces.get_piece_size())}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "sentencepiece.bpe.model").write_bytes(model_file.read_bytes())
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer"}))
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    # Language tags sit after the SentencePiece pieces, followed by 8 "madeup" words.
    _save_random_model(out_dir, max(tokenizer.lang_code_to_id.values()) + 9, 32, 0, 0.3)
    return out_dir

_BUILT: dict[str, Path] = {}


def shared_tiny_nllb(tmp_path_factory, data_dir: Path | None = None) -> Path:
    """Build the tiny model once per test session (about 3 s) and hand out its folder."""
    key = str(data_dir)
    if key not in _BUILT:
        _BUILT[key] = build_tiny_nllb(tmp_path_factory.mktemp("tiny_nllb"), data_dir)
    return _BUILT[key]


def available_data_dir() -> Path | None:
    """The shared datasets folder when present (tests fall back to built-in sentences otherwise)."""
    folder = expected_data_dir()  # as tests/conftest.py finds it (flare/data/locations.py)
    return folder if folder is not None and folder.is_dir() else None
