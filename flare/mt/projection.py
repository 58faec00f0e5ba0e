"""QA label projection through machine translation (TyDiQA-GoldP).

Method: wrap the answer span of the context in a pair of ASCII double quotes, translate the marked
context, take the first and last quote of the translation as the span, and remove the markers.

Why double quotes: NLLB keeps quoted spans quoted far more reliably than brackets or special
symbols (which it often drops or moves), and it is the marker the reference code used. Translation
may turn ``"`` into the target language's quotes (« », „ “, 「 」...), so every quote character in
:data:`QUOTE_CHARS` counts as a marker on the way back. For the markers to be the only quotes, all
quote characters are first removed from the source context (and its answer); only quotes that
stood BEFORE the answer shift its start (the reference shifted it by every quote in the context).
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = '"'
QUOTE_CHARS = frozenset('"“”„‟«»「」『』〝〞＂')

# Reasons a projected example is dropped; the keys of the "dropped" counts in output metadata.
DROP_ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
DROP_MARKERS_LOST = "markers_lost"
DROP_EMPTY_ANSWER = "empty_answer"


@dataclass(frozen=True)
class ProjectedAnswer:
    """A context with its answer span: ``context[start:start + len(text)] == text``."""

    context: str
    text: str
    start: int


def _strip_quotes(text: str) -> str:
    return "".join(ch for ch in text if ch not in QUOTE_CHARS)


def mark_answer(context: str, answer_text: str, answer_start: int) -> str | None:
    """Return the context with its quotes removed and the answer wrapped in :data:`MARKER`.

    Args:
        context: the source-language context.
        answer_text: the gold answer string.
        answer_start: character offset of the answer in ``context``. When the offset does not point
            at the answer, the occurrence of the answer closest to it is used.

    Returns:
        The marked context, or None when the answer does not occur in the context at all or is
        nothing but quotes.
    """
    if context[answer_start : answer_start + len(answer_text)] != answer_text:
        occurrences = [i for i in range(len(context)) if context.startswith(answer_text, i)]
        if not answer_text or not occurrences:
            return None
        answer_start = min(occurrences, key=lambda i: abs(i - answer_start))
    end = answer_start + len(answer_text)
    before = _strip_quotes(context[:answer_start])
    raw_answer = _strip_quotes(context[answer_start:end])
    answer = raw_answer.strip()
    if not answer:
        return None
    # Whitespace at the answer's edges stays outside the markers so the text itself is unchanged.
    lead = raw_answer[: len(raw_answer) - len(raw_answer.lstrip())]
    trail = raw_answer[len(raw_answer.rstrip()) :]
    after = _strip_quotes(context[end:])
    return f"{before}{lead}{MARKER}{answer}{MARKER}{trail}{after}"


def unmark_answer(translated: str) -> ProjectedAnswer | str:
    """Recover the answer span from a translated marked context.

    The first and last quote characters delimit the answer; every quote character is removed from
    the returned context (the source had none but the markers).

    Returns:
        A :class:`ProjectedAnswer`, or the drop reason (:data:`DROP_MARKERS_LOST` when fewer than two
        quotes survived, :data:`DROP_EMPTY_ANSWER` when nothing stands between them).
    """
    positions = [i for i, ch in enumerate(translated) if ch in QUOTE_CHARS]
    if len(positions) < 2:
        return DROP_MARKERS_LOST
    first, last = positions[0], positions[-1]
    before = _strip_quotes(translated[:first])
    answer = _strip_quotes(translated[first + 1 : last]).strip()
    after = _strip_quotes(translated[last + 1 :])
    if not answer:
        return DROP_EMPTY_ANSWER
    return ProjectedAnswer(context=before + answer + after, text=answer, start=len(before))
