"""Metrics on hand-computed cases."""

import numpy as np
import pytest

from flare.errors import FlareError
from flare.hf.metrics import (
    accuracy,
    compute_metrics,
    f1_score,
    macro_f1,
    normalize_answer,
    paper_compat_exact_match,
    squad,
)


def test_accuracy_counts_unparseable_as_wrong():
    assert accuracy([0, 1, 2, None], [0, 1, 1, 0]) == 50.0
    with pytest.raises(FlareError, match="3 predictions but 2 references"):
        accuracy([0, 1, 2], [0, 1])


def test_macro_f1_hand_computed():
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp1 fp1 fn0 -> 2/3
    refs = [0, 0, 1, 1, 2]
    preds = [0, 2, 1, 0, 2]
    assert macro_f1(preds, refs) == pytest.approx(100 * (0.5 + 2 / 3 + 2 / 3) / 3)
    # None never forms its own class but costs recall
    assert macro_f1([0, None], [0, 1]) == pytest.approx(100 * (1.0 + 0.0) / 2)
    # an explicit label set includes classes nobody used (score 0)
    assert macro_f1([0, 0], [0, 0], labels=[0, 1]) == 50.0
    assert macro_f1([1, 1, 1], [1, 1, 1]) == 100.0


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Nile!", "nile"),
        ("  an   apple,  a pear ", "apple pear"),
        ("Theatre of the Absurd", "theatre of absurd"),  # only whole-word articles go
        ("U.S.A.", "usa"),
        ("“quoted”", "“quoted”"),  # official v1.1 strips ASCII punctuation only
        ("A", ""),
    ],
)
def test_squad_normalisation(text, normalised):
    assert normalize_answer(text) == normalised


def test_squad_f1_and_em_hand_computed():
    # pred tokens: [1.3, square, feet, total]; gold: [1.3, square, feet] -> p=3/4 r=1 f1=6/7
    assert f1_score("1.3 square feet total", "1.3 square feet") == pytest.approx(6 / 7)
    assert f1_score("", "anything") == 0.0 and f1_score("the", "a") == 0.0  # both normalise to empty
    result = squad(
        {"a": "the Amos and Wilfrid Ayre", "b": "Paris, France", "c": "1918"},
        {"a": {"text": ["Amos and Wilfrid Ayre"]}, "b": {"text": ["Lyon", "Paris"]}, "c": ["1919"]},
    )
    # a: EM 1 F1 1; b: EM 0, F1 max(0, 2/3) ; c: 0
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    # paper-compatible EM: first gold only, no article stripping -> "the amos..." != "amos..."
    assert result["exact_match_paper_compat"] == 0.0 and result["count"] == 3


def test_multiple_gold_answers_take_the_max_and_paper_compat_takes_the_first():
    result = squad(["cairo"], [{"text": ["Giza", "Cairo"], "answer_start": [0, 10]}])
    assert result["exact_match"] == 100.0 and result["f1"] == 100.0 and result["exact_match_paper_compat"] == 0.0
    result = squad(["Cairo."], [["cairo", "Giza"]])
    assert result["exact_match_paper_compat"] == 100.0
    assert paper_compat_exact_match("New  York", "new york") == 0.0  # inner spaces are not collapsed


def test_squad_input_errors():
    with pytest.raises(FlareError, match="1 missing"):
        squad({"a": "x"}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(FlareError, match="no gold answers"):
        squad(["x"], [{"text": []}])
    with pytest.raises(FlareError, match="keyed by id"):
        squad(["x"], {"a": ["x"]})


def test_compute_metrics():
    cls = compute_metrics("classification", [0, 1], [0, 0])
    assert cls["accuracy"] == 50.0 and cls["macro_f1"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    qa = compute_metrics("qa", ["x"], [["x"]])
    assert qa["f1"] == 100.0
    with pytest.raises(FlareError):
        compute_metrics("ranking", [], [])


def test_classification_metrics_for_trainer_hand_computed():
    """Trainer's (logits, labels): arg-max classes [0, 2, 1, 2] against [0, 2, 2, -100]; the -100
    row is left out, so accuracy is 2/3 and macro-F1 the mean of F1 over classes 0, 1, 2 = (1 + 0 + 2/3) / 3."""
    from flare.hf.metrics import classification_metrics

    logits = np.array([[3.0, 1, 0], [0, 1, 2], [0, 5, 1], [0, 0, 9]])
    scores = classification_metrics((logits, np.array([0, 2, 2, -100])))
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["macro_f1"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)
    assert classification_metrics(((logits, "hidden states"), np.array([0, 2, 2, 2])))["accuracy"] == 75.0
