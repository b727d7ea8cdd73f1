"""Per-keyword thresholds: one false accept of ``right`` costs more than one of ``go`` when ``right``'s sound-alikes
are everywhere, so each keyword gets the threshold that buys the most hits for its share of the false-accept
budget.

The event gate treats labels independently (smoothing, threshold, debounce and hysteresis are per label), so a
label's false accepts and misses depend on its own threshold only. Given, for every label and every candidate
threshold, the false accepts on the tuning negatives and the misses on the tuning stream, :func:`allot` picks
one threshold per label exactly (a small dynamic programme over the false-accept budget):

* ``max_false_accepts``: fewest misses in all with at most that many false accepts in all; or
* ``max_misses``: fewest false accepts in all with at most that many misses in all.

Ties go to the higher threshold (fewer events on audio nobody tuned on).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class LabelCurve:
    """One label at each candidate threshold (ascending): false accepts on the negatives, misses on the stream."""
    thresholds: tuple[float, ...]
    false_accepts: tuple[int, ...]
    misses: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.thresholds)
        if not n or len(self.false_accepts) != n or len(self.misses) != n:
            raise ValueError("a label curve needs one false-accept and one miss count per threshold")
        if list(self.thresholds) != sorted(self.thresholds):
            raise ValueError("a label curve's thresholds must ascend")


@dataclasses.dataclass(frozen=True)
class Allotment:
    thresholds: dict[str, float]
    false_accepts: int
    misses: int
    feasible: bool          # False: no choice met the constraint; the result is the closest one


def _table(curves: Mapping[str, LabelCurve], cost: str, budget: int) -> list[dict[int, tuple[int, tuple[int, ...]]]]:
    """DP over labels: spent budget -> (least other cost, threshold indices). ``cost`` names what is budgeted."""
    states: dict[int, tuple[int, tuple[int, ...]]] = {0: (0, ())}
    layers = [states]
    for curve in curves.values():
        spend = curve.false_accepts if cost == "false_accepts" else curve.misses
        other = curve.misses if cost == "false_accepts" else curve.false_accepts
        nxt: dict[int, tuple[int, tuple[int, ...]]] = {}
        for used, (value, picks) in states.items():
            for i in reversed(range(len(curve.thresholds))):       # higher thresholds first: they win ties
                u = used + spend[i]
                if u > budget:
                    continue
                cand = (value + other[i], picks + (i,))
                if u not in nxt or cand[0] < nxt[u][0]:
                    nxt[u] = cand
        states = nxt
        layers.append(states)
    return layers


def allot(curves: Mapping[str, LabelCurve], *, max_false_accepts: int | None = None,
          max_misses: int | None = None) -> Allotment:
    """One threshold per label under exactly one of the two constraints (see the module doc)."""
    if (max_false_accepts is None) == (max_misses is None):
        raise ValueError("give exactly one of max_false_accepts and max_misses")
    labels = list(curves)
    cost, budget = ("false_accepts", max_false_accepts) if max_false_accepts is not None else ("misses", max_misses)
    final = _table(curves, cost, int(budget))[-1]
    if not final:                                   # nothing fits: the least of the budgeted cost at each label
        return _closest(curves, cost)
    used, (value, picks) = min(final.items(), key=lambda kv: (kv[1][0], kv[0]))
    chosen = {lab: curves[lab].thresholds[i] for lab, i in zip(labels, picks)}
    fa, miss = (used, value) if cost == "false_accepts" else (value, used)
    return Allotment(chosen, int(fa), int(miss), True)


def _closest(curves: Mapping[str, LabelCurve], cost: str) -> Allotment:
    chosen, fa, miss = {}, 0, 0
    for lab, c in curves.items():
        spend = c.false_accepts if cost == "false_accepts" else c.misses
        other = c.misses if cost == "false_accepts" else c.false_accepts
        i = min(range(len(c.thresholds)), key=lambda j: (spend[j], other[j], -c.thresholds[j]))
        chosen[lab] = c.thresholds[i]
        fa += c.false_accepts[i]
        miss += c.misses[i]
    return Allotment(chosen, fa, miss, False)


def curves_from_counts(thresholds: Sequence[float], fa_by_label: Sequence[Mapping[str, int]],
                       miss_by_label: Sequence[Mapping[str, int]], labels: Sequence[str]) -> dict[str, LabelCurve]:
    """Per-label curves from one replay per threshold (each replay's false accepts and misses by label)."""
    order = sorted(range(len(thresholds)), key=lambda i: thresholds[i])
    return {lab: LabelCurve(tuple(float(thresholds[i]) for i in order),
                            tuple(int(fa_by_label[i].get(lab, 0)) for i in order),
                            tuple(int(miss_by_label[i].get(lab, 0)) for i in order)) for lab in labels}
