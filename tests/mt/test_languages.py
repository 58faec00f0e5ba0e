"""Language-code table: coverage of every task language, explicit maps, clear errors."""

import pytest

from flare.errors import FlareError
from flare.mt.languages import LANGUAGES, flores_code, flores_codes, m2m100_tag

XNLI = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
TYDIQA = ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"]
NUSAX = ["ace", "ban", "bbc", "bjn", "bug", "eng", "ind", "jav", "mad", "min", "nij", "sun"]
NOT_IN_NLLB = {"bbc", "mad", "nij"}


def test_every_task_language_is_in_the_table():
    assert set(XNLI + TYDIQA + NUSAX) <= set(LANGUAGES)


@pytest.mark.parametrize("code", sorted(set(XNLI + TYDIQA + NUSAX) - NOT_IN_NLLB))
def test_covered_languages_resolve_to_flores_codes(code):
    flores = flores_code(code)
    assert len(flores) == 8 and flores[3] == "_"


def test_known_flores_codes():
    assert flores_codes(["sw", "zh", "eng", "jav", "bn", "te", "ar"]) == {
        "sw": "swh_Latn", "zh": "zho_Hans", "eng": "eng_Latn", "jav": "jav_Latn",
        "bn": "ben_Beng", "te": "tel_Telu", "ar": "arb_Arab",
    }


@pytest.mark.parametrize("code", sorted(NOT_IN_NLLB))
def test_uncovered_nusax_languages_need_an_explicit_map(code):
    with pytest.raises(FlareError, match="not covered by NLLB") as error:
        flores_code(code)
    assert "\n" not in str(error.value)
    assert flores_code(code, {code: "ind_Latn"}) == "ind_Latn"


def test_unknown_codes_and_bad_maps_fail_in_one_line():
    with pytest.raises(FlareError, match="unknown language code 'klingon'") as error:
        flores_code("klingon")
    assert "\n" not in str(error.value)
    assert flores_code("klingon", {"klingon": "tlh_Latn"}) == "tlh_Latn"
    with pytest.raises(FlareError, match="not a FLORES-200 code"):
        flores_code("mad", {"mad": "indonesian"})


def test_map_overrides_the_table_and_m2m100_tags():
    assert flores_code("sw", {"sw": "swh_Latn"}) == "swh_Latn"
    assert flores_code("ind", {"ind": "zsm_Latn"}) == "zsm_Latn"
    assert m2m100_tag("jav_Latn") == "jv" and m2m100_tag("swh_Latn") == "sw"
    with pytest.raises(FlareError, match="M2M100 has no language tag"):
        m2m100_tag("ace_Latn")


def test_flores_codes_are_accepted_directly():
    # a language the table does not know, named the way NLLB names it: no map needed
    assert flores_code("kin_Latn") == "kin_Latn"
    assert flores_codes(["eng_Latn", "swh_Latn"]) == {"eng_Latn": "eng_Latn", "swh_Latn": "swh_Latn"}
    with pytest.raises(FlareError, match="unknown language code 'kin_latn'"):
        flores_code("kin_latn")  # not a FLORES code: the script part is capitalised
