"""A weak but real offline MT system: word-by-word translation through the NusaX lexicons.

A NusaX local language reaches English through Indonesian: the ``ind-<lang>.csv`` table read
backwards (local -> Indonesian), then ``ind-eng.csv`` (Indonesian -> English). This is the English
side a user without a trained MT system could build, so it shows how much of FLARE's gain survives
a poor English side (BENCHMARKS.md, "Where FLARE's gain comes from").

Rules, chosen to be deterministic and simple to state:

* words are runs of letters/digits joined by ``'`` or ``-`` (``du'a``, ``kata-kata``); everything
  else (spaces, punctuation) is copied through unchanged;
* entries are matched case-insensitively, longest phrase first (the lexicons hold phrases such as
  ``ngangkat anak``), and only across plain whitespace;
* an entry with several alternatives (``posa/posi``, ``kesel (lelah)``, ``sabana, sangaik``) is
  cleaned to its alternatives (notes in parentheses dropped), each of which becomes a key; a value
  means its first alternative; entries without a letter (``0``, ``-``) or longer than
  ``MAX_ENTRY_WORDS`` words (comments in the sheet) are skipped;
* a word listed more than once means what its first row says;
* words no table knows stay as they are, so names and shared Indonesian words pass through (a
  local word the local table lacks is looked up in the Indonesian one: the languages share much
  vocabulary with Indonesian).

It plugs into :func:`flare.mt.translate.translate_dataset` as a backend, so its output follows the
translation-file contract (:func:`flare.data.parallel_data.translation_path`, meta file, SQLite cache).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flare.data.task_spec import data_root
from flare.data.tasks import NUSAX_LANGUAGES, get_task
from flare.errors import FlareError
from flare.files import read_text
from flare.mt.languages import ENGLISH
from flare.mt.translate import DecodingSettings, TranslationResult, translate_dataset, translation_quality

LEXICON_FOLDER = "nusax-lexicon"
PIVOT = "ind"
MAX_ENTRY_WORDS = 4
RULES_VERSION = "1"  # part of the cache key: a change to the rules above must not reuse old translations

_WORD = re.compile(r"\w+(?:['’-]\w+)*")
_NOTE = re.compile(r"\([^)]*\)?")


def words(text: str) -> list[re.Match[str]]:
    """The word tokens of ``text`` with their spans (punctuation and spaces are not tokens)."""
    return list(_WORD.finditer(text))


def _alternatives(entry: str) -> list[str]:
    """The usable alternatives of one lexicon cell, in sheet order."""
    found = []
    for part in re.split(r"[/,;]", _NOTE.sub(" ", entry)):
        tokens = [m.group().lower() for m in words(part)]
        if tokens and len(tokens) <= MAX_ENTRY_WORDS and any(c.isalpha() for c in "".join(tokens)):
            found.append(" ".join(tokens))
    return found


class WordTable:
    """One direction of a lexicon: phrase (tuple of lower-case words) -> replacement text."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        """``entries``: (from cell, to cell) in sheet order; the first usable meaning wins."""
        self.table: dict[tuple[str, ...], str] = {}
        for source, target in entries:
            meanings = _alternatives(target)
            if not meanings:
                continue
            for key in _alternatives(source):
                self.table.setdefault(tuple(key.split()), meanings[0])
        self.longest = max((len(k) for k in self.table), default=0)

    def __len__(self) -> int:
        return len(self.table)

    def translate(self, text: str) -> tuple[str, int, int]:
        """(text with every known word or phrase replaced, words replaced, words in all)."""
        tokens = words(text)
        pieces, cursor, i, known = [], 0, 0, 0
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 0, -1):
                span = tokens[i : i + n]
                if any(not text[a.end() : b.start()].isspace() for a, b in itertools.pairwise(span)):
                    continue  # a phrase never spans punctuation
                meaning = self.table.get(tuple(m.group().lower() for m in span))
                if meaning is not None:
                    first = span[0].group()
                    if first[:1].isupper():
                        meaning = meaning[:1].upper() + meaning[1:]
                    pieces += [text[cursor : span[0].start()], meaning]
                    cursor, i, known = span[-1].end(), i + n, known + n
                    break
            else:
                i += 1
        pieces.append(text[cursor:])
        return "".join(pieces), known, len(tokens)


def lexicon_dir(folder: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """The lexicon folder: ``folder``, else ``<data_dir or $FLARE_DATA_DIR>/nusax-lexicon``."""
    if folder is not None:
        return Path(folder)
    root = data_root(data_dir)
    if root is None:
        raise FlareError("no lexicon folder: pass lexicon_dir, or set FLARE_DATA_DIR to the datasets folder")
    return root / LEXICON_FOLDER


def read_lexicon(path: str | Path) -> list[tuple[str, str]]:
    """(Indonesian, other language) rows of an ``ind-<lang>.csv`` sheet, header
    ``,indonesian,<language>``. A missing file or column, a non-UTF-8 or empty file is a FlareError."""
    path = Path(path)
    text = read_text(path)  # names the file and line of a non-UTF-8 byte
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise FlareError(f"{path}: line {reader.line_num} is not valid CSV ({error})") from None
    if not rows:
        raise FlareError(f"{path}: empty file; expected a header ',indonesian,<language>' and word rows")
    header = [name.strip() for name in rows[0]]
    others = [i for i, name in enumerate(header) if name and name != "indonesian"]
    if "indonesian" not in header or len(others) != 1:
        raise FlareError(
            f"{path}: header {','.join(header)!r} needs an 'indonesian' column and one language column"
        )
    source, target = header.index("indonesian"), others[0]
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise FlareError(f"{path}: line {number} has {len(row)} fields but the header names {len(header)}")
        pairs.append((row[source], row[target]))
    if not pairs:
        raise FlareError(f"{path}: has a header but no word rows")
    return pairs


class LexiconTranslator:
    """A :class:`flare.mt.translate.TranslationBackend` for one NusaX language into English."""

    def __init__(self, language: str, folder: str | Path | None = None, data_dir: str | Path | None = None) -> None:
        """Args: language: NusaX code of the source language (``jav``, ``sun``, ..., or ``ind``);
        folder: the lexicon folder (default: ``<data_dir>/nusax-lexicon``); data_dir: the datasets
        folder (default: $FLARE_DATA_DIR)."""
        if language in ENGLISH:
            raise FlareError("the lexicon translates into English; give the language to translate from")
        self.language = language
        self.folder = lexicon_dir(folder, data_dir)
        files = [self.folder / f"{PIVOT}-eng.csv"]
        if language != PIVOT:
            files.insert(0, self.folder / f"{PIVOT}-{language}.csv")
        for path in files:
            if not path.is_file():
                raise FlareError(f"{path}: lexicon file not found (no word list for {language!r}?)")
        sheets = [read_lexicon(path) for path in files]
        self.to_pivot = WordTable((local, ind) for ind, local in sheets[0]) if language != PIVOT else None
        self.to_english = WordTable(sheets[-1])
        digest = hashlib.sha256(RULES_VERSION.encode())
        for path in files:
            digest.update(path.read_bytes())
        self.fingerprint = f"nusax-lexicon/{language}@{digest.hexdigest()[:16]}"
        self.settings = DecodingSettings()  # nothing to decode; kept because the cache key names it
        self.words = self.known = 0

    def translate(self, text: str) -> str:
        """English word by word. Counts the Indonesian words (after the first step) and those the
        English table knew, for the coverage figure of :func:`lexicon_quality`."""
        if self.to_pivot is not None:
            text = self.to_pivot.translate(text)[0]
        english, known, total = self.to_english.translate(text)
        self.words += total
        self.known += known
        return english

    def translate_batch(self, texts: list[str], src: str, tgt: str) -> list[str]:
        expected = language_map(self.language)
        if src != expected[self.language] or tgt != expected["eng"]:
            raise FlareError(f"this lexicon translates {self.language} into English, not {src} into {tgt}")
        return [self.translate(text) for text in texts]


def language_map(language: str) -> dict[str, str]:
    """FLORES-style codes for the cache and meta file. The lexicon names its languages itself, so
    bbc, mad and nij (which NLLB lacks) need no borrowed code."""
    return {language: f"{language}_Latn", "eng": "eng_Latn", "en": "eng_Latn"}


def translate_with_lexicon(
    rows: Iterable[Any], *, src_lang: str, task: str, split: str, translations_dir: str | Path,
    tgt_lang: str = "eng", folder: str | Path | None = None, data_dir: str | Path | None = None,
    cache_path: str | Path | None = None, fields: list[str] | None = None, show_progress: bool = True,
) -> TranslationResult:
    """``flare.mt.translate.translate_dataset`` with the lexicon as its backend: the same JSONL, meta
    file and cache, written to ``translation_path(translations_dir, task, split, src_lang, tgt_lang)``."""
    if tgt_lang not in ENGLISH:
        raise FlareError(f"the lexicon translates into English (eng), not {tgt_lang!r}")
    translator = LexiconTranslator(src_lang, folder, data_dir)
    return translate_dataset(
        rows, model=f"{LEXICON_FOLDER}:{translator.folder}", src_lang=src_lang, tgt_lang=tgt_lang, task=task,
        split=split, translations_dir=translations_dir, fields=fields,
        language_map={k: v for k, v in language_map(src_lang).items() if k in (src_lang, tgt_lang)},
        cache_path=cache_path, show_progress=show_progress, translator=translator,
    )


def lexicon_quality(
    language: str, split: str = "test", data_dir: str | Path | None = None, folder: str | Path | None = None,
    limit: int = 0,
) -> dict[str, Any]:
    """BLEU and chrF of the lexicon translation of one NusaX split against its gold English, plus
    the share of the Indonesian-step words that the English table knew (``coverage``, %) and the
    chrF of the untranslated text (``chrf_untranslated``, the floor a translation must beat)."""
    pairs = get_task("nusax").load_pairs(split, language, data_dir, source="gold")
    pairs = pairs[:limit] if limit else pairs
    translator = LexiconTranslator(language, folder, data_dir)
    originals = [p.target.fields["text"] for p in pairs]
    references = [p.source.fields["text"] for p in pairs]
    scores = translation_quality([translator.translate(text) for text in originals], references, "en")
    coverage = round(100 * translator.known / max(translator.words, 1), 2)
    # the untranslated text scored as English: what the lexicon adds over passing the text through
    untranslated = translation_quality(originals, references, "en")["chrf"]
    return {"language": language, "split": split, "sentences": len(pairs), **scores, "coverage": coverage,
            "chrf_untranslated": untranslated}


def quality_table(results: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`lexicon_quality` results."""
    lines = ["| language | sentences | BLEU | chrF | chrF untranslated | words known (%) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['language']} | {r['sentences']} | {r['bleu']:.1f} | {r['chrf']:.1f} "
              f"| {r['chrf_untranslated']:.1f} | {r['coverage']:.1f} |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m flare.mt.lexicon [--split test] [lang ...]``: the quality table of every language."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("languages", nargs="*", default=[c for c in NUSAX_LANGUAGES if c not in ENGLISH])
    parser.add_argument("--split", default="test")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    print(quality_table(lexicon_quality(lang, args.split, args.data_dir) for lang in args.languages))


if __name__ == "__main__":
    main()
