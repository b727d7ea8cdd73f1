"""How sure a measured false-accept rate or false-reject rate is: 95 % confidence intervals.

Half an hour of negative audio with no false accept does not show "0 per hour": it shows fewer than ~7.4 per
hour at 95 % confidence. These intervals go next to every FA/h and FRR this project reports.

* :func:`rate_interval`: events counted over an exposure (false accepts over hours of audio), the exact
  (Garwood) Poisson interval, found by bisection on the Poisson distribution so only ``math`` is needed.
* :func:`proportion_interval`: k of n (missed words), the Wilson score interval.
"""
from __future__ import annotations

import math

__all__ = ["rate_interval", "proportion_interval"]


def _poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean), summed in log space (stable for the thousands of events a sweep sees)."""
    if mean <= 0.0:
        return 1.0
    log_term = -mean                      # log P(X = 0)
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(mean) - math.log(i)
        total += math.exp(log_term)
    return min(1.0, total)


def _solve_mean(k: int, target: float) -> float:
    """The Poisson mean at which P(X <= k) == target (decreasing in the mean), by bisection."""
    lo, hi = 0.0, max(10.0, 2.0 * k + 10.0)
    while _poisson_cdf(k, hi) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _poisson_cdf(k, mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-10 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _z(conf: float) -> float:
    """Two-sided standard normal quantile for ``conf`` (e.g. 1.95996 for 0.95), by bisection on erf."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if math.erf(mid / math.sqrt(2.0)) < conf:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _check(conf: float) -> None:
    if not 0.0 < conf < 1.0:
        raise ValueError(f"confidence {conf!r} must lie strictly between 0 and 1, e.g. 0.95")


def rate_interval(events: int, exposure: float, conf: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a rate: ``events`` counted over ``exposure`` (e.g. hours).

    ``rate_interval(0, 1.0)`` is (0.0, 3.689): no false accept in an hour means fewer than 3.7 per hour."""
    _check(conf)
    if events < 0 or exposure <= 0:
        raise ValueError(f"need events >= 0 and a positive exposure, got {events} over {exposure}")
    alpha = 1.0 - conf
    upper = _solve_mean(events, alpha / 2.0)
    lower = 0.0 if events == 0 else _solve_mean(events - 1, 1.0 - alpha / 2.0)
    return lower / exposure, upper / exposure


def proportion_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (e.g. missed words of a stream)."""
    _check(conf)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got {k} of {n}")
    z = _z(conf)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))
