"""Per-keyword thresholds: the allotment is the exact optimum (checked against brute force) under either
constraint, ties go to higher thresholds, and an impossible budget says so."""
import itertools

import numpy as np
import pytest

from tools.label_thresholds import LabelCurve, allot, curves_from_counts


def _random_curves(rng: np.random.Generator, labels: int, points: int) -> dict[str, LabelCurve]:
    out = {}
    for k in range(labels):
        fa = np.sort(rng.integers(0, 30, points))[::-1]          # false accepts fall as the threshold rises
        miss = np.sort(rng.integers(0, 12, points))               # misses rise
        out[f"w{k}"] = LabelCurve(tuple(np.linspace(0.5, 0.99, points).round(3)), tuple(int(v) for v in fa),
                                  tuple(int(v) for v in miss))
    return out


def _brute(curves, budget, cost):
    best = None
    for picks in itertools.product(*(range(len(c.thresholds)) for c in curves.values())):
        fa = sum(c.false_accepts[i] for c, i in zip(curves.values(), picks))
        miss = sum(c.misses[i] for c, i in zip(curves.values(), picks))
        spent, other = (fa, miss) if cost == "fa" else (miss, fa)
        if spent <= budget and (best is None or other < best):
            best = other
    return best


@pytest.mark.parametrize("seed", range(6))
def test_allotment_is_the_exact_optimum(seed):
    rng = np.random.default_rng(seed)
    curves = _random_curves(rng, 4, 5)
    for budget in (0, 5, 20, 60):
        a = allot(curves, max_false_accepts=budget)
        best = _brute(curves, budget, "fa")
        assert a.feasible == (best is not None)
        if best is not None:
            assert a.misses == best and a.false_accepts <= budget
            assert a.false_accepts == sum(curves[k].false_accepts[curves[k].thresholds.index(t)]
                                          for k, t in a.thresholds.items())
        b = allot(curves, max_misses=budget // 3)
        best_b = _brute(curves, budget // 3, "miss")
        if best_b is not None:
            assert b.feasible and b.false_accepts == best_b and b.misses <= budget // 3


def test_costly_label_gets_the_high_threshold_and_ties_go_up():
    curves = {"right": LabelCurve((0.5, 0.9, 0.99), (40, 6, 0), (0, 1, 3)),
              "go": LabelCurve((0.5, 0.9, 0.99), (2, 0, 0), (0, 0, 2))}
    a = allot(curves, max_false_accepts=8)
    assert a.thresholds == {"right": 0.9, "go": 0.9} and (a.false_accepts, a.misses) == (6, 1)


def test_impossible_budget_gives_the_closest_choice_marked_infeasible():
    curves = {"a": LabelCurve((0.5, 0.9), (10, 4), (0, 2))}
    a = allot(curves, max_false_accepts=1)
    assert not a.feasible and a.thresholds == {"a": 0.9} and a.false_accepts == 4
    with pytest.raises(ValueError):
        allot(curves)
    with pytest.raises(ValueError):
        LabelCurve((0.9, 0.5), (1, 2), (0, 0))


def test_curves_from_replays_sort_by_threshold():
    c = curves_from_counts([0.9, 0.5], [{"a": 1}, {"a": 7, "b": 2}], [{"a": 3}, {}], ["a", "b"])
    assert c["a"] == LabelCurve((0.5, 0.9), (7, 1), (0, 3)) and c["b"].false_accepts == (2, 0)
