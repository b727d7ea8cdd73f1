"""The 95 % intervals next to every FA/h and FRR: exact Poisson and Wilson, against published values
(chi-square quantiles for the Poisson bounds; the Wilson formula worked by hand)."""
from __future__ import annotations

import pytest

from edge.intervals import proportion_interval, rate_interval


@pytest.mark.parametrize("events, expected", [
    (0, (0.0, 3.6889)),          # chi2(0.975; 2) / 2
    (1, (0.02532, 5.5716)),      # chi2(0.025; 2) / 2, chi2(0.975; 4) / 2
    (10, (4.7954, 18.3904)),     # chi2(0.025; 20) / 2, chi2(0.975; 22) / 2
    (466, (424.6452, 510.2942)),  # a sweep's busiest point: large counts stay accurate
])
def test_poisson_interval_matches_chi_square_quantiles(events, expected):
    assert rate_interval(events, 1.0) == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_rate_scales_with_exposure_and_narrows_with_more_audio():
    lo, hi = rate_interval(1, 0.433)                  # one false accept in the README's 0.43 h
    assert (lo, hi) == pytest.approx((0.02532 / 0.433, 5.5716 / 0.433), rel=1e-4)
    widths = [rate_interval(round(2 * h), h)[1] - rate_interval(round(2 * h), h)[0] for h in (1, 10, 100)]
    assert widths[0] > widths[1] > widths[2]          # same 2 FA/h, ten times the audio each step


@pytest.mark.parametrize("k, n, expected", [
    (0, 10, (0.0, 0.27753)),
    (5, 10, (0.23659, 0.76341)),
    (10, 10, (0.72247, 1.0)),
    (14, 80, (0.10721, 0.27258)),   # the default bundle's 14 missed of 80 test words
])
def test_wilson_interval(k, n, expected):
    assert proportion_interval(k, n) == pytest.approx(expected, abs=1e-5)


def test_wider_at_higher_confidence():
    assert rate_interval(3, 1.0, conf=0.99)[1] > rate_interval(3, 1.0)[1]
    assert proportion_interval(3, 20, conf=0.8)[1] < proportion_interval(3, 20)[1]


@pytest.mark.parametrize("call", [
    lambda: rate_interval(-1, 1.0), lambda: rate_interval(1, 0.0), lambda: rate_interval(1, 1.0, conf=1.0),
    lambda: proportion_interval(3, 2), lambda: proportion_interval(0, 0), lambda: proportion_interval(1, 4, conf=0),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
