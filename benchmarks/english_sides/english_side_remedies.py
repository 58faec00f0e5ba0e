"""The remedies' sections of benchmarks/english_sides/english_side_report.py: FLARE given a machine-made English
side, trained on gold, on that side or on a mix, with and without the learned English gate, and the
gate paired against plain FLARE with the values training left it at."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from benchmarks.english_sides.english_side_cells import (
    BASELINE,
    NOT_MEASURED,
    average,
    by_row,
    difference,
    fmt,
    language_cell,
    margin_cells,
    matched,
    record_fusions,
    record_languages,
    row_key,
    table,
)

TRAIN_SIDES = ("gold", "lexicon", "mix-lexicon")


def remedy_section(realistic: Sequence[Mapping], mixed: Sequence[Mapping], gated: Sequence[Mapping],
                   test: str = "lexicon") -> list[str]:
    """FLARE scored with the machine English `test` side, trained on gold, on that side, on a mix, with
    and without the learned English gate: the realistic study's rows and the remedy studies' rows
    (all from one stage-1 model), each beside translate-train (LoRA) of the realistic study."""
    plain, mix, gate = by_row(realistic), by_row(mixed), by_row(gated)
    base = plain.get(BASELINE)
    every = [*realistic, *mixed, *gated]
    fusion, languages = record_fusions(every)[0], record_languages(every)
    rows = [("translate-train (LoRA), no English", base)]
    for name, source in (("FLARE", {**plain, **mix}), ("FLARE, English gate", gate)):
        for train in TRAIN_SIDES:
            rows.append((f"{name} [train {train}, test {test}]", source.get(("flare", fusion, train, test))))
    body = [[label, *(fmt(language_cell(v or {}, lang), count_languages=False) for lang in languages),
             fmt(average(v or {})), "reference" if v is base else fmt(difference(v, base), signed=True)]
            for label, v in rows]
    return [f"## Remedies for a machine-made English side (test side: {test})", "",
            *table(["run", *languages, "avg", "Δ vs translate-train (LoRA)"], body), "",
            "Mixed training: half the training examples with lexicon-MT English, half gold "
            "(benchmarks/reproduce/nusax-remedy.yaml); the gate: one learned scalar per fused module scaling the "
            "English side's change (adapter.english_gate, benchmarks/reproduce/nusax-remedy-gate.yaml). Δ paired "
            "by (language, seed) as above."]


def gate_section(realistic: Sequence[Mapping], mixed: Sequence[Mapping], gated: Sequence[Mapping]) -> list[str]:
    """The gated runs minus plain FLARE's of the same language, seed, train and test side (plain FLARE
    from the realistic and mixed-training studies, which share the gate study's stage-1 model), and
    where training left the gates."""
    title = "## The learned English gate against plain FLARE, paired by (language, seed), same sides"
    plain, gate = {**by_row(realistic), **by_row(mixed)}, by_row(gated)
    fusion = record_fusions([*realistic, *mixed, *gated])[0]
    languages = record_languages(gated)
    body = []
    for test in ("lexicon", "gold"):
        for train in TRAIN_SIDES:
            key = ("flare", fusion, train, test)
            paired = matched(gate.get(key) or {}, plain.get(key) or {})
            if paired:
                body.append([f"train {train}, test {test}", *margin_cells(paired, languages),
                             _gate_values(gated, key)])
    if not body:
        return [title, "", NOT_MEASURED]
    return [title, "", *table(["English sides", *languages, "avg", "gates at the end"], body), "",
            "Gated score minus plain FLARE's; ± as in the margins. Gates: g = 1 is plain FLARE, 0 ignores the "
            "English side; the lowest and highest over the runs' fused modules, and the mean, from the records' "
            "`english_gate` (runs recorded before it existed have none and are not counted)."]


def _gate_values(records: Sequence[Mapping], key: tuple) -> str:
    gates = [r["english_gate"] for r in records if row_key(r) == key and "english_gate" in r]
    if not gates:
        return NOT_MEASURED
    mean = math.fsum(g["mean"] for g in gates) / len(gates)
    low, high = min(g["min"] for g in gates), max(g["max"] for g in gates)
    return f"{low:.2f} to {high:.2f}, mean {mean:.2f} ({len(gates)} run{'s' * (len(gates) > 1)})"
