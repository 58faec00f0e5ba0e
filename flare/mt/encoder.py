"""FLARE-MT source states: a frozen NLLB/M2M100 encoder run over the target-language text.

Unlike the reference code, the tokenizer tags the text with ITS OWN language (``src_lang`` = the
target language's FLORES code), not English. States are right-padded and come with their attention
mask, which the adapter core takes as ``source_states`` + ``source_attention_mask``.

States can be precomputed into safetensors shards (never pickle): each text's unpadded ``[L, d]``
state is stored under the hash of (model, the dtype it computed in, language code, max length, text),
so lookups need neither the model nor the original batch, and states computed in bfloat16 are never
served to a float32 run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from flare.errors import FlareError
from flare.files import atomic_path
from flare.hf.device import dtype_name
from flare.mt.languages import flores_code
from flare.mt.translate import load_seq2seq, model_fingerprint, set_source_language


class MTEncoder:
    """The encoder half of an M2M100/NLLB checkpoint, frozen and in eval mode."""

    def __init__(
        self, model: str, *, device: str = "auto", dtype: str = "auto", max_length: int = 256,
        language_map: Mapping[str, str] | None = None,
    ) -> None:
        """Args:
            model: local path or hub id of an M2M100/NLLB checkpoint (e.g. nllb-200-distilled-600M).
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (flare/hf/device.py).
            dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16`` for the encoder weights; the
                states come out in float32 whatever it is.
            max_length: tokens kept per text, language tag and ``</s>`` included.
            language_map: explicit project-code -> FLORES choices (see :func:`flores_code`).
        """
        self.model_name = model
        self.fingerprint = model_fingerprint(model)
        self.max_length = max_length
        self.language_map = dict(language_map or {})
        self.tokenizer, seq2seq = load_seq2seq(model, device, dtype)
        # Keep only the encoder so the decoder's memory is released.
        self.encoder = seq2seq.get_encoder()
        self.hidden_size: int = seq2seq.config.d_model
        self.device = seq2seq.device
        self.dtype_name = dtype_name(seq2seq.dtype)  # part of the cache key: states differ by dtype
        del seq2seq

    def tokenize(self, texts: Sequence[str], lang: str) -> Any:
        """Tokenize ``texts`` tagged as project language ``lang``; right padding, truncation."""
        set_source_language(self.tokenizer, flores_code(lang, self.language_map))
        self.tokenizer.padding_side = "right"
        return self.tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )

    @torch.no_grad()  # not inference_mode: the states feed a trainable projection later
    def encode(self, texts: Sequence[str], lang: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(states [B, L, d_mt] float, attention_mask [B, L] long)`` of the last encoder layer
        (after its final LayerNorm); padded positions are zero in the states and 0 in the mask."""
        if not texts:
            raise FlareError("no text to encode")
        batch = self.tokenize(texts, lang).to(self.device)
        states = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"]
        return states.float() * mask.unsqueeze(-1), mask


    def encode_each(self, texts: Sequence[str], langs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` of texts in several languages, each tagged with its own (one pass per language)."""
        pieces: list[torch.Tensor | None] = [None] * len(texts)
        for lang in dict.fromkeys(langs):
            rows = [i for i, code in enumerate(langs) if code == lang]
            states, mask = self.encode([texts[i] for i in rows], lang)
            for j, i in enumerate(rows):
                pieces[i] = states[j, : int(mask[j].sum())].cpu()
        states, mask = _pad(pieces)
        return states.to(self.device), mask.to(self.device)


def _pad(pieces: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(piece.shape[0] for piece in pieces)
    states = torch.zeros(len(pieces), length, pieces[0].shape[-1], dtype=torch.float32)
    mask = torch.zeros(len(pieces), length, dtype=torch.long)
    for i, piece in enumerate(pieces):
        states[i, : piece.shape[0]] = piece.float()
        mask[i, : piece.shape[0]] = 1
    return states, mask


class EncoderStateStore:
    """Encoder states on disk as safetensors shards under ``<cache_dir>/<model hash>/``.

    Reading needs only the model name (for its fingerprint), not the model itself.
    """

    def __init__(
        self, cache_dir: str | Path, model: str, max_length: int = 256,
        language_map: Mapping[str, str] | None = None, store_dtype: str = "float32",
        encoder_dtype: str = "float32",
    ) -> None:
        """Args: cache_dir: root folder; model and max_length: as given to :class:`MTEncoder`;
        language_map: project-code -> FLORES choices; store_dtype: ``float32`` or ``float16`` on disk;
        encoder_dtype: the dtype the encoder computes in (:attr:`MTEncoder.dtype_name`)."""
        if store_dtype not in ("float32", "float16"):
            raise FlareError(f"store_dtype must be float32 or float16, not {store_dtype!r}")
        self.fingerprint = model_fingerprint(model)
        self.max_length = max_length
        self.encoder_dtype = encoder_dtype
        self.language_map = dict(language_map or {})
        self.store_dtype = getattr(torch, store_dtype)
        slug = hashlib.sha256(self.fingerprint.encode()).hexdigest()[:16]
        self.directory = Path(cache_dir) / f"{Path(model).name or 'model'}-{slug}"
        self._where: dict[str, Path] = {}
        self._shards: set[Path] = set()
        self._refresh()

    def _refresh(self) -> None:
        if not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("*.safetensors")):
            if shard not in self._shards:
                with safe_open(str(shard), framework="pt") as handle:
                    self._where.update(dict.fromkeys(handle.keys(), shard))
                self._shards.add(shard)

    def key(self, text: str, lang: str) -> str:
        code = flores_code(lang, self.language_map)
        payload = json.dumps([self.fingerprint, self.encoder_dtype, code, self.max_length, text], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def missing(self, texts: Sequence[str], lang: str) -> list[str]:
        """Unique texts that have no stored state yet, in first-seen order."""
        return [t for t in dict.fromkeys(texts) if self.key(t, lang) not in self._where]

    def add(self, texts: Sequence[str], lang: str, states: torch.Tensor, mask: torch.Tensor) -> Path:
        """Store one encoded batch as a new shard, written to a temp file then renamed into place."""
        tensors = {
            self.key(text, lang): states[i, : int(mask[i].sum())].to(self.store_dtype).contiguous()
            for i, text in enumerate(texts)
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        shard = self.directory / f"{uuid.uuid4().hex}.safetensors"
        with atomic_path(shard) as temp:
            save_file(tensors, temp, metadata={"model": self.fingerprint, "lang": lang})
        self._where.update(dict.fromkeys(tensors, shard))
        self._shards.add(shard)
        return shard

    def get(self, texts: Sequence[str], lang: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states [B, L, d] float32, attention_mask [B, L])`` for stored texts, right-padded;
        ``lang`` is their language, or each text's own (a batch of several languages)."""
        self._refresh()
        langs = [lang] * len(texts) if isinstance(lang, str) else list(lang)
        keys = [self.key(text, code) for text, code in zip(texts, langs, strict=True)]
        absent = [text for text, key in zip(texts, keys) if key not in self._where]
        if absent:
            raise FlareError(f"{len(absent)} texts have no stored encoder state (first: {absent[0][:60]!r})")
        loaded: dict[str, torch.Tensor] = {}
        for shard in {self._where[key] for key in keys}:  # one open per shard, not per text
            with safe_open(str(shard), framework="pt") as handle:
                loaded.update({key: handle.get_tensor(key) for key in keys if self._where[key] == shard})
        return _pad([loaded[key] for key in keys])


def precompute_encoder_states(
    encoder: MTEncoder, texts: Sequence[str], lang: str, cache_dir: str | Path, *,
    batch_size: int = 32, store_dtype: str = "float32", show_progress: bool = True,
) -> EncoderStateStore:
    """Encode every not-yet-stored text of ``texts`` (project language ``lang``) and return the store.

    Texts are encoded longest first in batches of ``batch_size``; each batch becomes one shard as soon
    as it is done, so an interrupted run keeps its finished batches.
    """
    store = EncoderStateStore(cache_dir, encoder.model_name, encoder.max_length, encoder.language_map, store_dtype,
                              encoder.dtype_name)
    todo = sorted(store.missing(texts, lang), key=lambda t: (-len(t), t))
    with tqdm(total=len(todo), unit="text", desc=f"encode {lang}", disable=not show_progress) as bar:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            states, mask = encoder.encode(chunk, lang)
            store.add(chunk, lang, states.cpu(), mask.cpu())
            bar.update(len(chunk))
    return store
