"""Project language codes and the codes machine-translation models use for them.

The project names languages as its datasets do (XNLI and TyDiQA: ISO 639-1 such as ``sw``; NusaX:
ISO 639-3 such as ``jav``). NLLB-200 wants FLORES-200 codes (``swh_Latn``) and M2M100 wants its own
ISO 639-1 tags (``sw``). Every translation or MT-encoder call goes through :func:`flores_code`
so that a language NLLB does not cover fails loudly instead of silently becoming another language,
as it does in the reference code (NusaX bbc, mad and nij become Indonesian there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flare.errors import FlareError

_FLORES_PATTERN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


@dataclass(frozen=True)
class Language:
    """One project language. ``flores`` is None when NLLB-200 does not cover it; ``m2m100`` is None
    when M2M100 does not."""

    code: str
    name: str
    flores: str | None
    m2m100: str | None


def _lang(code: str, name: str, flores: str | None, m2m100: str | None) -> Language:
    return Language(code, name, flores, m2m100)


LANGUAGES: dict[str, Language] = {
    entry.code: entry
    for entry in (
        # XNLI
        _lang("ar", "Arabic", "arb_Arab", "ar"),
        _lang("bg", "Bulgarian", "bul_Cyrl", "bg"),
        _lang("de", "German", "deu_Latn", "de"),
        _lang("el", "Greek", "ell_Grek", "el"),
        _lang("en", "English", "eng_Latn", "en"),
        _lang("es", "Spanish", "spa_Latn", "es"),
        _lang("fr", "French", "fra_Latn", "fr"),
        _lang("hi", "Hindi", "hin_Deva", "hi"),
        _lang("ru", "Russian", "rus_Cyrl", "ru"),
        _lang("sw", "Swahili", "swh_Latn", "sw"),
        _lang("th", "Thai", "tha_Thai", "th"),
        _lang("tr", "Turkish", "tur_Latn", "tr"),
        _lang("ur", "Urdu", "urd_Arab", "ur"),
        _lang("vi", "Vietnamese", "vie_Latn", "vi"),
        _lang("zh", "Chinese (simplified)", "zho_Hans", "zh"),
        # TyDiQA-GoldP (ar, en, ru, sw above)
        _lang("bn", "Bengali", "ben_Beng", "bn"),
        _lang("fi", "Finnish", "fin_Latn", "fi"),
        _lang("id", "Indonesian", "ind_Latn", "id"),
        _lang("ko", "Korean", "kor_Hang", "ko"),
        _lang("te", "Telugu", "tel_Telu", None),
        # NusaX
        _lang("ace", "Acehnese", "ace_Latn", None),
        _lang("ban", "Balinese", "ban_Latn", None),
        _lang("bbc", "Batak Toba", None, None),
        _lang("bjn", "Banjarese", "bjn_Latn", None),
        _lang("bug", "Buginese", "bug_Latn", None),
        _lang("eng", "English", "eng_Latn", "en"),
        _lang("ind", "Indonesian", "ind_Latn", "id"),
        _lang("jav", "Javanese", "jav_Latn", "jv"),
        _lang("mad", "Madurese", None, None),
        _lang("min", "Minangkabau", "min_Latn", None),
        _lang("nij", "Ngaju", None, None),
        _lang("sun", "Sundanese", "sun_Latn", "su"),
    )
}
# every code that names English: the study reports leave it out of "target languages", the lexicon translates into it
ENGLISH = frozenset(code for code, lang in LANGUAGES.items() if lang.flores == "eng_Latn") | {"en", "eng"}

# FLORES code -> M2M100 tag, for M2M100 checkpoints and for explicit maps written in FLORES codes.
_FLORES_TO_M2M100: dict[str, str] = {
    entry.flores: entry.m2m100 for entry in LANGUAGES.values() if entry.flores and entry.m2m100
}


def check_language_map(language_map: Mapping[str, str]) -> None:
    """Every value a FLORES-200 code; one FlareError line naming the first that is not."""
    if not isinstance(language_map, Mapping):
        raise FlareError(f"language map: expected a mapping of code -> FLORES-200 code, got {language_map!r:.60}")
    for code, flores in language_map.items():
        if not isinstance(flores, str) or not _FLORES_PATTERN.match(flores):
            raise FlareError(
                f"language map entry {code!r}: {flores!r} is not a FLORES-200 code like 'ind_Latn'"
            )


def flores_code(code: str, language_map: Mapping[str, str] | None = None) -> str:
    """Return the FLORES-200 code used for project language ``code``.

    Args:
        code: a project language code (``sw``, ``jav``, ``eng``...), or a FLORES-200 code itself
            (``swh_Latn``), which is used as it is: the NLLB tokenizer checks it exists.
        language_map: explicit choices that win over the built-in table, e.g. ``{"mad": "ind_Latn"}``
            for a language NLLB does not cover, or a code the table does not know.

    Raises:
        FlareError: unknown code, or a language NLLB does not cover and the map does not name.
    """
    language_map = dict(language_map or {})
    check_language_map(language_map)
    if code in language_map:
        return language_map[code]
    if _FLORES_PATTERN.match(code):
        return code
    entry = LANGUAGES.get(code)
    if entry is None:
        known = " ".join(sorted(LANGUAGES))
        raise FlareError(
            f"unknown language code {code!r}; known: {known}, or any FLORES-200 code such as 'swh_Latn' "
            f"(or map it, e.g. {{{code!r}: 'xxx_Latn'}})"
        )
    if entry.flores is None:
        raise FlareError(
            f"language {code!r} ({entry.name}) is not covered by NLLB-200; map it explicitly, "
            f"e.g. language_map={{{code!r}: 'ind_Latn'}} (the reference code silently uses Indonesian)"
        )
    return entry.flores


def flores_codes(
    codes: list[str] | tuple[str, ...], language_map: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Resolve several codes at once; the result is the mapping written into output metadata."""
    return {code: flores_code(code, language_map) for code in codes}


def m2m100_tag(flores: str) -> str:
    """The M2M100 language tag for a FLORES code (M2M100 checkpoints use ISO 639-1 tags)."""
    tag = _FLORES_TO_M2M100.get(flores)
    if tag is None:
        raise FlareError(f"M2M100 has no language tag for {flores!r}; use an NLLB-200 checkpoint")
    return tag


def same_language(code: str, known: list[str] | tuple[str, ...]) -> str:
    """`code` spelled as in `known` (a task's codes): `en` is NusaX's `eng` and `eng` is XNLI's
    `en`, since both name English (FLORES eng_Latn). A code `known` already has, or one with no
    counterpart there, comes back as it is."""
    if code in known:
        return code
    flores = LANGUAGES[code].flores if code in LANGUAGES else code if _FLORES_PATTERN.match(code) else None
    matches = [other for other in known if flores and other in LANGUAGES and LANGUAGES[other].flores == flores]
    return matches[0] if len(matches) == 1 else code
