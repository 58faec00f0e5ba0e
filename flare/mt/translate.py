"""Machine translation of dataset fields (FLARE step 3) with any M2M100 or NLLB checkpoint.

Translation is the slowest step, so every translated sentence goes into a SQLite cache as soon as
its batch finishes (one commit per batch): a rerun translates nothing twice and an interrupted run
resumes where it stopped. Batches are cut from the full, length-sorted list of unique texts before
the cache is consulted, so a resumed run decodes exactly the batches an uninterrupted run would and
produces identical output.

Output: ``<translations_dir>/<task>/<split>/<src>-<tgt>.jsonl`` (one ``{"id", <field>..., ["answers"]}``
object per line) plus ``<src>-<tgt>.meta.json``, both written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from flare import extras
from flare.data.examples import require_text, visible
from flare.data.parallel_data import translation_path
from flare.data.tasks import BUILTIN_TASKS, get_task
from flare.errors import FlareError, first_line
from flare.files import write_atomically
from flare.hf.checks import check_weights
from flare.hf.device import dtype_name, resolve_placement
from flare.mt.cache import TranslationCache
from flare.mt.languages import flores_code, flores_codes, m2m100_tag, same_language
from flare.mt.projection import DROP_ANSWER_NOT_IN_CONTEXT, MARKER, mark_answer, unmark_answer

TRANSLATABLE_FIELDS = ("premise", "hypothesis", "text", "question", "context")
_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DecodingSettings:
    """Everything that changes a translation, and so is part of the cache key.

    ``max_new_tokens=None`` means 1.5 x the batch's input length + 10 (the reference capped the output
    at the input length, which cuts translations into longer languages).
    """

    num_beams: int = 1
    max_input_length: int = 256
    max_new_tokens: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if min(self.num_beams, self.max_input_length, 1 if self.max_new_tokens is None else self.max_new_tokens) < 1:
            raise FlareError("num_beams, max_input_length and max_new_tokens must be positive")
        if self.dtype not in _DTYPES:
            raise FlareError(f"dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def model_fingerprint(model: str) -> str:
    """Identify a checkpoint without loading it: a local directory is named by its absolute path plus
    a hash of its config and weight-file sizes (retraining in place gives new cache entries); a hub id
    is named by itself."""
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.name == "config.json":
            digest.update(item.read_bytes())
        elif item.suffix in {".safetensors", ".bin"}:
            digest.update(f"{item.name}:{item.stat().st_size}".encode())
    return f"{path.resolve()}@{digest.hexdigest()[:16]}"


def load_seq2seq(model: str, device: str, dtype: str) -> tuple[Any, Any]:
    """Load tokenizer and model (frozen, eval) on its device in its dtype (flare/hf/device.py), or
    fail with a one-line FlareError."""
    placement = resolve_placement(device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForSeq2SeqLM.from_pretrained(model, **placement.from_pretrained_kwargs())
    except (OSError, ValueError) as error:
        raise FlareError(f"cannot load MT model {model!r}: {first_line(error)}") from None
    network.eval().requires_grad_(False)
    return tokenizer, network


def check_mt_model(model: str) -> None:
    """Fail before any work (and before the cache is created) when a local ``model`` is not a
    translation model; hub ids are checked when they load."""
    path = Path(model).expanduser()
    if not (path.exists() or model.startswith((".", "/", "~"))):
        return
    if not (path / "config.json").is_file():
        raise FlareError(f"MT model {model}: not a model directory (no config.json)")

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FlareError(f"MT model {model}: unreadable config.json ({first_line(error)})") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise FlareError(
            f"MT model {model}: a {config.model_type} model is not an encoder-decoder translation model (NLLB/M2M100)"
        )

    check_weights(path)


def language_token_id(tokenizer: Any, flores: str) -> int:
    """Token id of a language tag; NLLB tags are FLORES codes, M2M100 ones ``__xx__``."""
    if hasattr(tokenizer, "get_lang_id"):
        return tokenizer.get_lang_id(m2m100_tag(flores))
    token_id = tokenizer.convert_tokens_to_ids(flores)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise FlareError(f"the MT tokenizer has no language tag {flores!r}")
    return token_id


def set_source_language(tokenizer: Any, flores: str) -> None:
    """Make the tokenizer tag its input as ``flores`` (the tokenizer keeps this as state)."""
    language_token_id(tokenizer, flores)  # fails clearly on a missing tag
    tokenizer.src_lang = m2m100_tag(flores) if hasattr(tokenizer, "get_lang_id") else flores


class TranslationBackend(Protocol):
    """What :func:`translate_texts` needs from a translator (tests plug in fakes)."""

    fingerprint: str
    settings: DecodingSettings

    def translate_batch(self, texts: list[str], src: str, tgt: str) -> list[str]: ...


class Seq2SeqTranslator:
    """An M2M100/NLLB checkpoint behind :class:`TranslationBackend`. Loads nothing until the first
    batch that misses the cache, so a fully cached rerun never touches the model."""

    def __init__(self, model: str, settings: DecodingSettings | None = None, device: str = "auto") -> None:
        """Args: model: local path or hub id; settings: decoding settings; device: ``auto``, ``cpu``,
        ``cuda``, ``cuda:1``..."""
        self.model_name = model
        self.settings = settings or DecodingSettings()
        self.device = device
        self.fingerprint = model_fingerprint(model)
        self.truncated_inputs = 0
        self._tokenizer: Any = None
        self._model: Any = None

    def _load(self) -> None:
        if self._model is None:
            self._tokenizer, self._model = load_seq2seq(self.model_name, self.device, self.settings.dtype)

    def translate_batch(self, texts: list[str], src: str, tgt: str) -> list[str]:
        self._load()
        tokenizer, settings = self._tokenizer, self.settings
        set_source_language(tokenizer, src)
        target_id = language_token_id(tokenizer, tgt)
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        self.truncated_inputs += sum(n > settings.max_input_length for n in lengths)
        batch = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=settings.max_input_length
        ).to(self._model.device)
        max_new = settings.max_new_tokens or int(1.5 * batch["input_ids"].shape[1]) + 10

        with torch.no_grad():
            output = self._model.generate(
                **batch, forced_bos_token_id=target_id, num_beams=settings.num_beams,
                do_sample=False, max_new_tokens=max_new,
            )
        return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


@dataclass
class TranslationStats:
    texts: int = 0
    unique_texts: int = 0
    from_cache: int = 0
    translated: int = 0


def translate_columns(
    columns: Sequence[Sequence[str]], *, src_lang: str, tgt_lang: str, mt_model: str, cache_dir: Path,
    device: str = "auto", dtype: str = "auto", language_map: Mapping[str, str] | None = None,
) -> list[list[str]]:
    """Columns of texts (e.g. one per task field) translated on the fly with one load of an
    NLLB/M2M100 model, on `device` in `dtype`, through the translation cache in `cache_dir` (as
    `flare translate` caches). Languages are project or FLORES codes (`language_map` as there)."""
    settings = DecodingSettings(dtype=dtype_name(resolve_placement(device, dtype).dtype))
    translator = Seq2SeqTranslator(mt_model, settings, device)
    cache = TranslationCache(cache_dir / "translation_cache.sqlite")
    src, tgt = flores_code(src_lang, language_map), flores_code(tgt_lang, language_map)
    return [
        translate_texts(list(column), src=src, tgt=tgt, translator=translator, cache=cache, show_progress=False)
        for column in columns
    ]


def translate_texts(
    texts: Sequence[str], *, src: str, tgt: str, translator: TranslationBackend, cache: TranslationCache,
    batch_size: int = 32, show_progress: bool = True, stats: TranslationStats | None = None,
) -> list[str]:
    """Translate ``texts`` (FLORES codes ``src`` -> ``tgt``) through the cache.

    Unique texts are sorted by length (longest first, so memory errors show up at once) and cut into
    fixed batches; within each batch only cache misses go to the model, and each batch is committed
    to the cache before the next starts.
    """
    if batch_size < 1:
        raise FlareError("batch_size must be positive")
    stats = stats if stats is not None else TranslationStats()
    namespace = (translator.fingerprint, src, tgt, translator.settings.key())
    unique = sorted(set(texts), key=lambda t: (-len(t), t))
    done = cache.lookup(namespace, unique)
    stats.texts += len(texts)
    stats.unique_texts += len(unique)
    stats.from_cache += len(done)
    missing_total = len(unique) - len(done)
    with tqdm(total=missing_total, unit="sent", desc=f"translate {src}->{tgt}", disable=not show_progress) as bar:
        for i in range(0, len(unique), batch_size):
            missing = [t for t in unique[i : i + batch_size] if t not in done]
            if not missing:
                continue
            outputs = translator.translate_batch(missing, src, tgt)
            if len(outputs) != len(missing):
                raise RuntimeError(f"translator returned {len(outputs)} outputs for {len(missing)} inputs")
            cache.store(namespace, zip(missing, outputs))
            done.update(zip(missing, outputs))
            stats.translated += len(missing)
            bar.update(len(missing))
    return [done[t] for t in texts]


def _row_parts(row: Any) -> tuple[str, Mapping[str, Any], Any]:
    """(id, fields, answers) of a plain dict row or of an object with ``.id/.fields/.answers``."""
    if isinstance(row, Mapping):
        if "id" not in row:
            raise FlareError("every row needs an 'id'")
        fields = row["fields"] if isinstance(row.get("fields"), Mapping) else row
        return str(row["id"]), fields, row.get("answers")
    return str(row.id), row.fields, getattr(row, "answers", None)


def _first_answer(answers: Any) -> tuple[str, int] | None:
    """The first gold answer as (text, start); only it is projected, as in the reference."""
    if isinstance(answers, Mapping) and answers.get("text"):
        return answers["text"][0], int(answers["answer_start"][0])
    if isinstance(answers, Sequence) and answers and isinstance(answers[0], Mapping):
        return answers[0]["text"], int(answers[0]["answer_start"])
    return None


@dataclass
class TranslationResult:
    output_path: Path
    meta_path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def translate_dataset(
    rows: Iterable[Any], *, model: str, src_lang: str, tgt_lang: str, task: str, split: str,
    translations_dir: str | Path, fields: Sequence[str] | None = None,
    language_map: Mapping[str, str] | None = None, cache_path: str | Path | None = None,
    batch_size: int = 32, num_beams: int = 1, max_input_length: int = 256, max_new_tokens: int | None = None,
    device: str = "auto", dtype: str = "auto", show_progress: bool = True,
    translator: TranslationBackend | None = None, allow_empty: bool = False,
) -> TranslationResult:
    """Translate the text fields of a dataset split and write the JSONL + meta files.

    Args:
        rows: dicts with an ``"id"`` and text fields (or a ``"fields"`` dict), or objects with
            ``.id``, ``.fields`` and optionally ``.answers`` (e.g. ``flare.data.tasks.Example``).
        model: M2M100/NLLB checkpoint, a local directory or a hub id (e.g. ``facebook/nllb-200-3.3B``).
        src_lang, tgt_lang: project language codes (``en``, ``sw``, ``eng``, ``jav``...): ``en`` ->
            target for translate-train data, target -> ``en`` for translate-test data. For a built-in
            task they are spelled as the task spells them (NusaX's English is ``eng``, so ``en`` names
            the file ``jav-eng.jsonl`` that a study reads).
        task, split: name the output folder ``<translations_dir>/<task>/<split>/``.
        translations_dir: root folder of the translation files.
        fields: fields to translate; default: every one of premise, hypothesis, text, question and
            context that the first row has.
        language_map: explicit project-code -> FLORES-code choices, e.g. ``{"mad": "ind_Latn"}``.
        cache_path: SQLite cache; default ``<translations_dir>/translation_cache.sqlite``.
        batch_size: sentences per generate call.
        num_beams: 1 is greedy decoding (the reference's setting); more is beam search.
        max_input_length: tokens kept per input (longer inputs are truncated and counted in meta;
            TyDiQA contexts need about 768).
        max_new_tokens: output cap; None means 1.5 x input length + 10.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``...
        dtype: ``auto`` (bfloat16 or float16 on a GPU, float32 on the CPU), ``float32``, ``float16``
            or ``bfloat16`` for the model weights (the resolved dtype is part of the cache key).
        show_progress: show a tqdm bar with sentences per second.
        translator: a ready backend instead of loading ``model`` (tests, custom engines).
        allow_empty: leave rows the model translated to empty text out of the file (counted in the
            meta file) instead of refusing to write it.

    QA rows (an answer and a translated ``context``) get their first answer projected through
    the translation (see :mod:`flare.mt.projection`); rows whose answer is lost are left out and counted
    by reason in the meta file.
    """
    if task in BUILTIN_TASKS:  # the task's own spelling ("en" is NusaX's "eng"): studies look for that file
        known = get_task(task).languages
        src_lang, tgt_lang = same_language(src_lang, known), same_language(tgt_lang, known)
    codes = flores_codes([src_lang, tgt_lang], language_map)
    if batch_size < 1:
        raise FlareError(f"batch_size: {batch_size} must be at least 1")
    output = translation_path(translations_dir, task, split, src_lang, tgt_lang)  # its names checked before any work
    if translator is None:
        dtype = dtype_name(resolve_placement(device, dtype).dtype)  # a missing GPU fails before any work
    elif dtype == "auto":
        dtype = "float32"  # a ready backend brings its own model; "auto" names no dtype of it
    settings = DecodingSettings(num_beams, max_input_length, max_new_tokens, dtype)
    if translator is None:
        check_mt_model(model)
        translator = Seq2SeqTranslator(model, settings, device)
    rows = [_row_parts(row) for row in rows]
    if not rows:
        raise FlareError(f"no rows to translate for {task}/{split}")
    if fields is None:
        fields = [name for name in TRANSLATABLE_FIELDS if rows and name in rows[0][1]]
    if not fields:
        raise FlareError(f"no field to translate; rows need one of {', '.join(TRANSLATABLE_FIELDS)}")
    dropped: Counter[str] = Counter()
    sources: list[tuple[str, dict[str, str], bool]] = []  # id, field -> source text, projected?
    for row_id, row_fields, answers in rows:
        missing = [name for name in fields if not isinstance(row_fields.get(name), str)]
        if missing:
            raise FlareError(f"row {row_id!r} has no text field {missing[0]!r}")
        texts = {name: require_text(row_fields[name], f"row {row_id!r}", name) for name in fields}
        answer = _first_answer(answers) if "context" in fields else None
        if answer is not None:
            marked = mark_answer(texts["context"], *answer)
            if marked is None:
                dropped[DROP_ANSWER_NOT_IN_CONTEXT] += 1
                continue
            texts["context"] = marked
        sources.append((row_id, texts, answer is not None))

    started = time.perf_counter()
    truncated_before = getattr(translator, "truncated_inputs", None)
    stats = TranslationStats()
    all_texts = [text for _, texts, _ in sources for text in texts.values()]
    with TranslationCache(cache_path or Path(translations_dir) / "translation_cache.sqlite") as cache:
        translated = iter(translate_texts(
            all_texts, src=codes[src_lang], tgt=codes[tgt_lang], translator=translator, cache=cache,
            batch_size=batch_size, show_progress=show_progress, stats=stats,
        ))
    lines, empty = [], []
    for row_id, texts, projected in sources:
        record: dict[str, Any] = {"id": row_id, **{name: next(translated) for name in texts}}
        if projected:
            span = unmark_answer(record["context"])
            if isinstance(span, str):
                dropped[span] += 1
                continue
            record["context"] = span.context
            record["answers"] = {"text": [span.text], "answer_start": [span.start]}
        if not all(visible(record[name]) for name in texts):
            empty.append(row_id)  # an empty English side would train and score as if it were a translation
            continue
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    if empty and not allow_empty:
        raise FlareError(
            f"{model} translated {len(empty)} of {len(sources)} rows to empty text (first: row {empty[0]!r}); "
            "nothing written (the cache keeps the translations): try another model, or allow_empty to leave them out"
        )
    if empty:
        dropped["empty_translation"] = len(empty)
    meta_path = output.with_name(f"{src_lang}-{tgt_lang}.meta.json")
    meta = {
        "task": task, "split": split, "src_lang": src_lang, "tgt_lang": tgt_lang,
        "model": model, "model_fingerprint": translator.fingerprint, "language_codes": codes,
        "language_map": dict(language_map or {}),
        "decoding": asdict(settings) | {"batch_size": batch_size}, "fields": list(fields),
        "projection_marker": MARKER if "context" in fields else None,
        "counts": {"rows_in": len(rows), "rows_out": len(lines), **asdict(stats),
                   "truncated_inputs": None if truncated_before is None
                   else translator.truncated_inputs - truncated_before},
        "dropped": {tgt_lang: dict(sorted(dropped.items()))},
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_atomically(output, "".join(lines))
    write_atomically(meta_path, json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    return TranslationResult(output, meta_path, meta)


def translation_quality(
    hypotheses: Sequence[str], references: Sequence[str], tgt_lang: str | None = None
) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) of translations against gold references (NusaX and XNLI
    are parallel, so their gold sides score an MT model). Chinese uses sacrebleu's ``zh`` tokenizer,
    Thai (no spaces) ``char``; the rest ``13a``."""
    sacrebleu = extras.require("sacrebleu")
    if len(hypotheses) != len(references) or not hypotheses:
        raise FlareError(f"need as many references as translations (got {len(references)} and {len(hypotheses)})")
    tokenize = {"zh": "zh", "th": "char"}.get(tgt_lang or "", "13a")
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}
