"""DetectorSettings and RuntimeOptions: resolution (given, the bundle's tuned value, the default), checks that
name the setting, the command-line flags, and the sweep's replace."""
import argparse
import types

import pytest

from edge.errors import AuricleError, BundleError
from edge.settings import (DEFAULT_HOP, DEFAULT_MIN_GAP, DEFAULT_SMOOTH, DEFAULT_THRESHOLD, DetectorSettings,
                           RuntimeOptions)


def tuned(**block):
    """What DetectorSettings reads of a bundle: its manifest's tuned ``detector`` block (from load_bundle)."""
    return types.SimpleNamespace(tuned_detector=block)


def test_given_values_win_then_the_bundles_tuned_values_then_the_defaults():
    b = tuned(threshold=0.85, smooth=5, min_gap="0.5", hop=0.3, target_false_accepts_per_hour=1.0)
    s = DetectorSettings.from_bundle(b)
    assert (s.hop, s.threshold, s.smooth, s.min_gap) == (DEFAULT_HOP, 0.85, 5, 0.5)   # hop is never tuned
    s = DetectorSettings.from_bundle(b, threshold=0.6, smooth=None, min_gap=0.0)
    assert (s.threshold, s.smooth, s.min_gap) == (0.6, 5, 0.0)
    s = DetectorSettings.from_bundle(tuned())
    assert (s.hop, s.threshold, s.smooth, s.min_gap) == (DEFAULT_HOP, DEFAULT_THRESHOLD, DEFAULT_SMOOTH,
                                                         DEFAULT_MIN_GAP)


@pytest.mark.parametrize("changes, message", [
    ({"hop": 0}, "hop 0 must be > 0 s"), ({"hop": float("inf")}, "hop inf must be > 0 s"),
    ({"threshold": 1.5}, "threshold 1.5 must be a probability"), ({"threshold": True}, "threshold True"),
    ({"smooth": 0}, "smooth 0 must be a whole number"), ({"smooth": 2.5}, "smooth 2.5"),
    ({"min_gap": -1.0}, "min_gap -1.0 must be >= 0 s")])
def test_checks_name_the_setting_not_a_flag(changes, message):
    with pytest.raises(AuricleError, match=message) as caught:
        DetectorSettings().replace(**changes)
    assert "--" not in str(caught.value)
    with pytest.raises(AuricleError, match=message):
        DetectorSettings.from_bundle(tuned(), **changes)


def test_a_malformed_tuned_value_or_an_unknown_setting_is_one_line():
    with pytest.raises(BundleError, match="tuned detector setting threshold is malformed.*tune_detector"):
        DetectorSettings.from_bundle(tuned(threshold="high"))
    with pytest.raises(AuricleError, match="unknown detector setting.*treshold"):
        DetectorSettings.from_bundle(tuned(), treshold=0.5)
    with pytest.raises(AuricleError, match="threshold 7.0 must be"):     # a tuned value is checked too
        DetectorSettings.from_bundle(tuned(threshold=7))


def test_flags_round_trip_and_left_out_flags_take_the_tuned_values():
    p = argparse.ArgumentParser()
    DetectorSettings.add_arguments(p)
    RuntimeOptions.add_arguments(p)
    b = tuned(threshold=0.9, smooth=7)
    args = p.parse_args(["--hop", "0.2", "--min-gap", "0", "--threads", "2"])
    assert DetectorSettings.from_args(args, b) == DetectorSettings(hop=0.2, threshold=0.9, smooth=7, min_gap=0.0)
    assert RuntimeOptions.from_args(args) == RuntimeOptions(num_threads=2)
    assert DetectorSettings.from_args(p.parse_args([]), b).threshold == 0.9
    for bad in (["--threshold", "2"], ["--smooth", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_replace_keeps_the_other_settings_and_describe_names_them_all():
    s = DetectorSettings(hop=0.1, threshold=0.8, smooth=3, min_gap=0.5)
    r = s.replace(threshold=0.9)
    assert (r.hop, r.threshold, r.smooth, r.min_gap) == (0.1, 0.9, 3, 0.5) and s.threshold == 0.8
    assert s.describe(0.096) == "hop 0.10 s, threshold 0.8, smooth 3, min-gap 0.5 s"
    with pytest.raises(AuricleError, match="num_threads 0"):
        RuntimeOptions(num_threads=0).validate()


def test_per_label_thresholds_resolve_check_and_print():
    b = types.SimpleNamespace(tuned_detector={"threshold": 0.8, "label_thresholds": {"right": 0.97, "go": "0.9"}},
                              labels=["go", "right", "up", "_unknown_"])
    s = DetectorSettings.from_bundle(b)
    assert s.label_thresholds == (("go", 0.9), ("right", 0.97))
    assert (s.threshold_of("right"), s.threshold_of("up")) == (0.97, 0.8)
    assert "threshold 0.8, go 0.9, right 0.97, smooth" in s.describe()
    p = argparse.ArgumentParser()
    DetectorSettings.add_arguments(p)
    given = DetectorSettings.from_args(p.parse_args(["--label-threshold", "up=0.99"]), b)
    assert given.label_thresholds == (("up", 0.99),)                     # given ones replace the tuned ones
    with pytest.raises(AuricleError, match="names left, not a label of this bundle"):
        DetectorSettings.from_bundle(b, label_thresholds={"left": 0.9})
    with pytest.raises(AuricleError, match=r"label_thresholds go=1.5: each must be a probability"):
        DetectorSettings.from_bundle(b, label_thresholds={"go": 1.5})
    with pytest.raises(SystemExit):
        p.parse_args(["--label-threshold", "right"])


def test_a_label_with_its_own_threshold_fires_at_it_and_the_rest_do_not_change():
    import numpy as np

    from edge.gate import EventGate

    labels, bg = ["a", "b", "_unknown_"], frozenset({"_unknown_"})
    scores = np.asarray([[0.92, 0.92, 0.0], [0.0, 0.0, 1.0], [0.96, 0.96, 0.0]])
    def fired(settings):
        gate = EventGate(labels, bg, settings)
        return [(ev.label, i) for i, row in enumerate(scores) for ev in gate.step(row, float(i * 2), i)[1]]
    common = DetectorSettings(threshold=0.9, smooth=1, min_gap=0.0)
    assert fired(common) == [("a", 0), ("b", 0), ("a", 2), ("b", 2)]
    own = common.replace(label_thresholds=(("a", 0.95),))
    assert fired(own) == [("b", 0), ("a", 2), ("b", 2)]                 # a needs 0.95 now; b is as before
