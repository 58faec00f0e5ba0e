"""QA label projection with quote markers, including the reference code's offset bug."""

from flare.mt.projection import (
    DROP_EMPTY_ANSWER,
    DROP_MARKERS_LOST,
    ProjectedAnswer,
    mark_answer,
    unmark_answer,
)


def test_quotes_after_the_answer_do_not_shift_it():
    context = 'Paris is the capital. "Nice", "Lyon" and "Lille" are other cities.'
    marked = mark_answer(context, "Paris", 0)
    assert marked == '"Paris" is the capital. Nice, Lyon and Lille are other cities.'
    # The reference subtracted all 6 removed quotes from the start: 0 - 6 = -6.
    assert unmark_answer(marked) == ProjectedAnswer(
        "Paris is the capital. Nice, Lyon and Lille are other cities.", "Paris", 0
    )


def test_quotes_before_the_answer_shift_it_by_their_number_only():
    context = 'A "big" town, Lyon, and a "small" one.'
    start = context.index("Lyon")
    marked = mark_answer(context, "Lyon", start)
    assert marked.index('"') == start - 2  # the two quotes around "big"
    projected = unmark_answer(marked)
    assert projected.context[projected.start :].startswith("Lyon") and projected.start == start - 2


def test_wrong_offset_uses_nearest_occurrence_and_missing_answer_is_none():
    context = "cat dog cat dog"
    assert mark_answer(context, "dog", 10) == 'cat dog cat "dog"'
    assert mark_answer(context, "dog", 5) == 'cat "dog" cat dog'
    assert mark_answer(context, "bird", 0) is None
    assert mark_answer('say "" now', '""', 4) is None  # answer made only of quotes


def test_answer_with_inner_quotes_and_edge_whitespace():
    context = 'He wrote  "Hamlet" in 1600.'
    marked = mark_answer(context, ' "Hamlet"', context.index(' "Hamlet"'))
    assert marked == 'He wrote  "Hamlet" in 1600.'
    assert unmark_answer(marked).text == "Hamlet"


def test_translated_quote_styles_and_spaces_inside_markers():
    projected = unmark_answer("Die Hauptstadt ist „ Paris “ , sagte er.")
    assert projected.text == "Paris"
    assert projected.context[projected.start : projected.start + 5] == "Paris"
    assert '„' not in projected.context and '“' not in projected.context
    japanese = unmark_answer("首都は「パリ」です。")
    assert japanese == ProjectedAnswer("首都はパリです。", "パリ", 3)


def test_lost_or_empty_markers_are_reported():
    assert unmark_answer("no markers here") == DROP_MARKERS_LOST
    assert unmark_answer('only one " marker') == DROP_MARKERS_LOST
    assert unmark_answer('empty " " span') == DROP_EMPTY_ANSWER
    # Extra quotes inserted by the model: the first and last ones delimit the span.
    projected = unmark_answer('the "big "red" car" drove')
    assert projected.text == "big red car" and projected.context == "the big red car drove"
