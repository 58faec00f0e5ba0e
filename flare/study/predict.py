"""Labelling new target-language inputs with a trained run of a study: one language, or, with a
joint adapter, rows of several languages (each row's own language, from a language column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flare.adapter import EnglishStateCache, load_flare_model
from flare.adapter.card import card_languages
from flare.adapter.io import check_adapter_dir
from flare.data.examples import Example, Pair, read_records, require_text, visible
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.checks import check_weights
from flare.hf.formats import FormatSettings, PairFormatter
from flare.hf.loading import load_backbone
from flare.hf.scoring import predict_items
from flare.mt.translate import translate_columns
from flare.study.data import mt_encoder, mt_text
from flare.study.folder import folder_variant, stage1_dir, stage1_done, stage1_source
from flare.study.methods import METHODS
from flare.study.objectives import saved_model
from flare.study.runs import Run
from flare.study.settings import Study


def _example(task, text: str, language: str, number: int) -> Example:
    """One input: a single text, or the task's fields separated by tabs (premise<TAB>hypothesis)."""
    fields = task.encoder_fields if task.type == "classification" else ["question", "context"]
    parts = text.split("\t")
    if len(parts) != len(fields):
        raise FlareError(
            f"input {number}: expected {len(fields)} tab-separated field(s) ({', '.join(fields)}), got {len(parts)}"
        )
    return Example(
        id=str(number), language=language,
        fields={f: require_text(p, f"input {number}", f) for f, p in zip(fields, parts)},
    )


def _machine_english(study: Study, texts: list[str], language: str, source_language: str) -> list[str]:
    """The inputs translated into English on the fly with study.mt_model (cached like `flare
    translate`); tab-separated fields are translated one by one."""
    columns = list(zip(*(t.split("\t") for t in texts)))
    translated = translate_columns(
        columns, src_lang=language, tgt_lang=source_language, mt_model=study.mt_model,
        cache_dir=Path(study.output_dir) / "translations", device=study.device, dtype=study.dtype,
        language_map=study.language_map,
    )
    rows = list(zip(*translated))
    for number, fields in enumerate(rows):
        if not all(visible(f) for f in fields):
            raise FlareError(
                f"predict: {study.mt_model} translated input {number} to empty text; pass --english instead"
            )
    return ["\t".join(fields) for fields in rows]


LANGUAGE_COLUMN = "language"


def inputs_from_file(study: Study, path: Path, language: str | None) -> tuple[list[str], list[str], list[str] | None]:
    """(texts, each row's language, English sides or None) of a CSV, TSV or JSONL input file: the
    task's text columns (pair tasks: both, joined by a tab as on the command line), a `language`
    column (a row without one takes `language`), and optionally the English side in
    `english_<column>` for every text column."""
    task = get_task(study.task)
    rows, columns = read_records(path)
    if not rows:
        raise FlareError(f"{path}: no rows")
    spec = task.columns
    fields = task.encoder_fields if task.type == "classification" else ["question", "context"]
    names = {f: (spec.fields.get(f, f) if spec else f) for f in fields}
    missing = [c for c in names.values() if c not in columns]
    if missing:
        raise FlareError(f"{path}: no column {missing[0]!r} (the input text)")
    english = {f: f"english_{c}" for f, c in names.items()}
    has_english = all(c in columns for c in english.values())
    texts, languages, sides = [], [], []
    for number, row in enumerate(rows, start=1):
        where = f"{path}: row {number}"
        texts.append("\t".join(require_text(row.get(c), where, c) for c in names.values()))
        code = row.get(LANGUAGE_COLUMN) or language
        if not code:
            raise FlareError(f"{where}: no language (add a {LANGUAGE_COLUMN!r} column, or pass --language)")
        languages.append(str(code))
        if has_english:
            sides.append("\t".join(require_text(row.get(c), where, c) for c in english.values()))
    return texts, languages, sides if has_english else None


def _check_languages(adapter: Path, languages: list[str], allow_other_languages: bool) -> None:
    """Every row's language is one the adapter was trained on (its card lists them), unless allowed."""
    known = card_languages(adapter)
    if known is None or allow_other_languages:
        return
    for number, code in enumerate(languages):
        if code not in known:
            raise FlareError(
                f"predict: input {number} is in {code}, which {adapter} was not trained on ({', '.join(known)}); "
                "pass --allow_other_languages true to label it anyway"
            )


def predict_texts(study: Study, language: str | list[str], texts: list[str], english: list[str] | None,
                  method: str = "flare", fusion: str = "add_relu", seed: int = 1,
                  details: list[dict[str, Any]] | None = None, joint: bool = False,
                  allow_other_languages: bool = False) -> list[str]:
    """Predicted labels (classification) or answers (QA) for the texts, in order. `language` is the
    texts' language, or each text's own (mixed languages need `joint`: the study's joint adapter of
    the method and seed). The English side (flare, input-fusion, translate-test) is `english` when
    given, else translated on the fly with study.mt_model; flare-mt feeds study.mt_model's encoder
    states, each text tagged with its language. A text in a language the adapter was not trained
    on is refused unless `allow_other_languages`. A `details` list receives one record per input:
    id, language, text, label and class probabilities (or the answer)."""
    task = get_task(study.task)
    languages = [language] * len(texts) if isinstance(language, str) else list(language)
    if len(languages) != len(texts):
        raise FlareError(f"predict: {len(texts)} inputs but {len(languages)} languages")
    for code in dict.fromkeys(languages):
        task.check_language(code)
    if not joint and len(set(languages)) > 1:
        raise FlareError(
            f"predict: the inputs are in {len(set(languages))} languages ({', '.join(dict.fromkeys(languages))}); "
            "a per-language adapter reads one: pass --joint_adapter true for the study's joint adapter"
        )
    placement = study.placement()
    if method not in METHODS:
        raise FlareError(f"predict: unknown method {method!r}; choose from {', '.join(METHODS)}")
    view, trains = METHODS[method].view, METHODS[method].trains
    out = Path(study.output_dir)
    if not stage1_done(study):
        raise FlareError(
            f"predict: no stage-1 model in {stage1_dir(out)}; run `flare compare` or `flare train` first"
        )
    if english is not None and len(english) != len(texts):
        raise FlareError(f"predict: {len(texts)} inputs but {len(english)} English translations")
    # bad inputs fail before any loading
    targets = [_example(task, t, code, i) for i, (t, code) in enumerate(zip(texts, languages))]
    needs_english = METHODS[method].english_at_test
    if METHODS[method].mt_states and not study.mt_model:
        raise FlareError("predict: flare-mt needs mt_model (its encoder states feed the adapter)")
    if needs_english and english is None and not study.mt_model:
        raise FlareError(
            f"predict: {method} needs the English side: pass --english, or set mt_model to translate on the fly"
        )
    run = Run(method, fusion if METHODS[method].fused else None, languages[0], seed,
              variant=folder_variant(study), scope="joint" if joint else "per-language")
    adapter = run.folder(out) / "adapter"
    if trains:
        check_adapter_dir(adapter)  # a missing, pickled or truncated adapter fails before the base loads
        _check_languages(adapter, languages, allow_other_languages)
    if needs_english and english is None:
        english = [""] * len(texts)
        for code in dict.fromkeys(languages):  # one translation call per language
            rows = [i for i, c in enumerate(languages) if c == code]
            for i, side in zip(rows, _machine_english(study, [texts[i] for i in rows], code, task.source_language)):
                english[i] = side
    base = stage1_source(study)
    if Path(base).is_dir():
        check_weights(Path(base))  # so does a truncated stage-1 model (evaluate's plan checks it the same way)
    backbone, tokenizer, family = load_backbone(base, task, placement=placement, family=study.family)
    model = backbone
    if trains:
        try:
            model = saved_model(method, load_flare_model(backbone, adapter), adapter)
        except TypeError as error:  # PEFT builds its LoraConfig from adapter_config.json unchecked
            raise FlareError(
                f"{adapter / 'adapter_config.json'}: a setting has the wrong type ({str(error)[:200]})"
            ) from None
    items = targets
    if needs_english:
        items = [
            Pair(_example(task, e, task.source_language, i), t, "given")
            for i, (e, t) in enumerate(zip(english, targets))
        ]
    extra = None
    if METHODS[method].mt_states:
        encoder = mt_encoder(study)

        def extra(chunk):
            states, mask = encoder.encode_each([mt_text(ex, task.text_fields) for ex in chunk],
                                               [ex.language for ex in chunk])
            return {"source_states": states, "source_attention_mask": mask}

    formatter = PairFormatter(task, tokenizer, family, view, FormatSettings(max_length=study.data.max_length))
    if trains and view == "flare":
        # the English pass in the layout the study scored with (flare/adapter/english_cache.py), so a
        # text gets the probabilities its run gave it; each text is seen once, so nothing is kept
        model.english_state_cache = EnglishStateCache(formatter.max_length, study.stage2.batch_size, 0, memoize=False)
    distributions: dict[str, list[float]] = {}
    predictions = predict_items(model, formatter, items, study.stage2.eval_batch_size, extra, progress=False,
                                probabilities=distributions)
    ids = [str(i) for i in range(len(texts))]
    if details is not None:
        for number, i in enumerate(ids):
            row: dict[str, Any] = {"id": number, "language": languages[number], "text": texts[number]}
            if task.type == "classification":
                row["label"] = task.labels[predictions[i]]
                row["probabilities"] = {label: round(p, 6) for label, p in zip(task.labels, distributions[i])}
            else:
                row["answer"] = predictions[i]
            details.append(row)
    if task.type == "classification":
        return [task.labels[predictions[i]] for i in ids]
    return [predictions[i] for i in ids]
