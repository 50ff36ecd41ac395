# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statistics for a few repetitions of a scenario (standard library only).

A comparison run repeats each scenario K times (default 5). With so few values a mean and a standard
deviation say little, so every metric is described by its raw values, their median and their range, and by how
often such a range contains the true median (order statistics: the values need no particular distribution).

Public API
==========
A *bound* is ``{"value": float, "above": bool}``: ``above`` means the true figure is larger than ``value``
(a censored run: it did not finish within the timeout, so all we know is "> timeout").

``order_interval_coverage(k, rank) -> float``
    P(x(rank) <= median <= x(k - rank + 1)) for K values from a continuous distribution:
    sum of C(k, i) / 2**k for i from rank to k - rank.
``range_coverage(k) -> float``
    the same for [min, max] (rank 1): 75 % at K=3, 93.8 % at K=5, 96.9 % at K=6.
``median_interval(k, level=0.95) -> (low_rank, high_rank, coverage) | None``
    the narrowest symmetric order-statistic interval whose coverage is at least ``level``; None when even
    [min, max] falls short (K <= 5 at 95 %).
``summarize(values, censor_at=None) -> dict``
    one metric over K repetitions; ``values`` are numbers, or None for a censored run (then ``censor_at`` is
    required). Keys: ``k``, ``values`` (as given), ``censored`` (count), ``censor_at``, ``median``, ``min``,
    ``max`` (bounds, None when K=0), ``range_coverage``, ``ci95`` (None, or ``low_rank``, ``high_rank``,
    ``low``, ``high`` (bounds) and ``coverage``), ``p95`` (a bound, only when K >= 20, else None) and
    ``interval``: the one comparisons use, the 95 % interval when it exists, else [min, max]
    (``kind``: ``ci95`` or ``range``, ``low``, ``high``, ``coverage``).
    A median is "above" when a middle value is censored: "> timeout" when more than half are censored;
    with an even K and exactly half censored it is "> (x(K/2) + timeout) / 2".
``compare(name_a, summary_a, name_b, summary_b, unit="ms") -> dict``
    ``verdict`` (``not_distinguishable``, ``lower`` or ``not_comparable``), ``lower`` (the lower target's name
    or None), ``difference`` (a bound: how much lower the lower median is), ``ratio`` (a bound: higher median /
    lower median, or None) and ``text``: "not distinguishable at K=5: ..." when the two intervals overlap,
    otherwise which is lower and by how much ("2.10 s less, 40 % lower"; "4.20 s less, 4.5x lower").
``run_percentiles(samples, timeout=None) -> dict``
    in-run samples (latency calls) of one run: ``n``, ``timed_out`` and the bounds ``p50``, ``p95``, ``p99``,
    ``max`` (nearest rank; None samples timed out, so they rank above every answered one).
``across_runs(runs, censor_at=None, keys=PERCENTILE_KEYS) -> dict``
    for per-run percentiles (``run_percentiles`` results): ``{key: summarize(...)}``, the median of each
    percentile across runs. Percentiles are never averaged: the mean of two runs' p99 is no run's p99.
``format_value(value, unit="ms", above=False) -> str``
    "0.21 ms", "412 ms", "2.61 s", "> 60.0 s"; other units as three significant digits and the unit.
``format_bound(bound, unit="ms") -> str``
    ``format_value`` of a bound ("n/a" for None).
``format_coverage(coverage) -> str``
    "93.8 %"; "> 99.9 %" rather than a rounded "100.0 %".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

P95_MIN_K = 20
PERCENTILE_KEYS = ("p50", "p95", "p99", "max")
# How a unit is shown: times are normalised to milliseconds first.
_TIME_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001}


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError("k=%r must be a whole number >= 0" % (k,))


def order_interval_coverage(k, rank):
    """P(x(rank) <= median <= x(k - rank + 1)): the median lies between them unless fewer than ``rank``
    values fall on one side of it; each value falls below it with probability 1/2."""
    _check_k(k)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError("rank=%r must be a whole number >= 1" % (rank,))
    if k == 0 or 2 * rank > k + 1:
        return 0.0
    inside = sum(math.comb(k, i) for i in range(rank, k - rank + 1))
    return inside / float(2 ** k)


def range_coverage(k):
    return order_interval_coverage(k, 1)


def median_interval(k, level=0.95):
    """The narrowest symmetric interval [x(r), x(k-r+1)] with coverage >= level, as (r, k-r+1, coverage)."""
    _check_k(k)
    best = None
    for rank in range(1, k // 2 + 2):
        coverage = order_interval_coverage(k, rank)
        if coverage < level:
            break
        best = (rank, k - rank + 1, coverage)
    return best


def _bound(value, above=False):
    return {"value": float(value), "above": bool(above)}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Ordered:
    """The values sorted, censored ones last (each is "> censor_at"); rank is 1-based."""

    def __init__(self, values, censor_at):
        self.known = sorted(float(v) for v in values if v is not None)
        self.k = len(values)
        self.censor_at = censor_at

    def at(self, rank):
        if rank <= len(self.known):
            return _bound(self.known[rank - 1])
        return _bound(self.censor_at, above=True)


def _check_values(values, censor_at, what):
    if not isinstance(values, (list, tuple)):
        raise ValueError("%s must be a list of numbers (None for a censored run), not %r" % (what, values))
    for index, value in enumerate(values):
        if value is not None and not _is_number(value):
            raise ValueError("%s[%d]=%r is neither a finite number nor None (censored)" % (what, index, value))
    if any(v is None for v in values) and not _is_number(censor_at):
        raise ValueError("%s has censored (None) values: give censor_at, the timeout they did not finish in" % what)
    if censor_at is not None:
        if not _is_number(censor_at):
            raise ValueError("censor_at=%r must be a finite number (the timeout)" % (censor_at,))
        over = [v for v in values if v is not None and v > censor_at]
        if over:
            raise ValueError("%s has values above censor_at=%r (%r): a finished run cannot take longer than the "
                             "timeout" % (what, censor_at, over[0]))


def _median(ordered):
    k = ordered.k
    if k % 2:
        return ordered.at((k + 1) // 2)
    low, high = ordered.at(k // 2), ordered.at(k // 2 + 1)
    # With one middle value censored the median is only known to exceed the mean of the other and the timeout.
    return _bound((low["value"] + high["value"]) / 2.0, low["above"] or high["above"])


def summarize(values, censor_at=None):
    _check_values(values, censor_at, "values")
    values = list(values)
    k = len(values)
    censored = sum(1 for v in values if v is None)
    summary = {"k": k, "values": values, "censored": censored, "censor_at": censor_at,
               "median": None, "min": None, "max": None, "range_coverage": range_coverage(k),
               "ci95": None, "p95": None, "interval": None}
    if k == 0:
        return summary
    ordered = _Ordered(values, censor_at)
    summary["median"] = _median(ordered)
    summary["min"] = ordered.at(1)
    summary["max"] = ordered.at(k)
    interval = median_interval(k)
    if interval:
        low_rank, high_rank, coverage = interval
        summary["ci95"] = {"low_rank": low_rank, "high_rank": high_rank, "low": ordered.at(low_rank),
                           "high": ordered.at(high_rank), "coverage": coverage}
        summary["interval"] = {"kind": "ci95", "low": summary["ci95"]["low"], "high": summary["ci95"]["high"],
                               "coverage": coverage}
    else:
        summary["interval"] = {"kind": "range", "low": summary["min"], "high": summary["max"],
                               "coverage": summary["range_coverage"]}
    if k >= P95_MIN_K:
        summary["p95"] = ordered.at(_nearest_rank(k, 95))
    return summary


def _nearest_rank(n, percent):
    return max(1, int(math.ceil(percent / 100.0 * n)))


def run_percentiles(samples, timeout=None):
    _check_values(samples, timeout, "samples")
    if not samples:
        raise ValueError("samples is empty: a run without a single sample has no percentiles")
    ordered = _Ordered(list(samples), timeout)
    result = {"n": ordered.k, "timed_out": ordered.k - len(ordered.known)}
    for key, percent in (("p50", 50), ("p95", 95), ("p99", 99)):
        result[key] = ordered.at(_nearest_rank(ordered.k, percent))
    result["max"] = ordered.at(ordered.k)
    return result


def across_runs(runs, censor_at=None, keys=PERCENTILE_KEYS):
    summaries = {}
    for key in keys:
        values = []
        for index, run in enumerate(runs):
            bound = run.get(key) if isinstance(run, dict) else None
            if not isinstance(bound, dict) or "value" not in bound:
                raise ValueError("runs[%d].%s is missing: give run_percentiles() results" % (index, key))
            values.append(None if bound.get("above") else bound["value"])
        summaries[key] = summarize(values, censor_at)
    return summaries


def format_value(value, unit="ms", above=False):
    if value is None:
        return "n/a"
    prefix = "> " if above else ""
    if unit in _TIME_UNITS:
        ms = float(value) * _TIME_UNITS[unit]
        magnitude = abs(ms)
        if magnitude < 1:
            text = "%.2f ms" % ms
        elif magnitude < 10:
            text = "%.1f ms" % ms
        elif magnitude < 1000:
            text = "%.0f ms" % ms
        elif magnitude < 10000:
            text = "%.2f s" % (ms / 1000.0)
        elif magnitude < 100000:
            text = "%.1f s" % (ms / 1000.0)
        else:
            text = "%.0f s" % (ms / 1000.0)
        return prefix + text
    if unit == "count":
        return prefix + ("%d" % value if float(value).is_integer() else "%.1f" % value)
    if unit in ("", None):
        return prefix + "%.3g" % value
    return prefix + "%.3g %s" % (value, unit)


def format_bound(bound, unit="ms"):
    if bound is None:
        return "n/a"
    return format_value(bound["value"], unit, bound["above"])


def _entirely_below(low_interval, high_interval):
    """True when every value of one interval is below every value of the other."""
    top = low_interval["high"]
    bottom = high_interval["low"]
    if top["above"]:
        return False
    if bottom["above"]:
        return top["value"] <= bottom["value"]
    return top["value"] < bottom["value"]


def format_coverage(coverage):
    """"93.8 %"; never "100.0 %" for a coverage that is not 1 (K=20: 99.9998 %)."""
    if 0.9995 <= coverage < 1:
        return "> 99.9 %"
    return "%.1f %%" % (100 * coverage)


def _interval_text(summary, unit):
    interval = summary["interval"]
    return u"%s\u2013%s" % (format_bound(interval["low"], unit), format_bound(interval["high"], unit))


def _k_text(summary_a, summary_b):
    if summary_a["k"] == summary_b["k"]:
        return "K=%d" % summary_a["k"]
    return "K=%d and K=%d" % (summary_a["k"], summary_b["k"])


def _coverage_text(summary_a, summary_b):
    coverages = [format_coverage(s["interval"]["coverage"]) for s in (summary_a, summary_b)]
    if coverages[0] == coverages[1]:
        return "%s: each interval covers its median with %s" % (_k_text(summary_a, summary_b), coverages[0])
    return "%s: the intervals cover their medians with %s and %s" % (
        _k_text(summary_a, summary_b), coverages[0], coverages[1])


def compare(name_a, summary_a, name_b, summary_b, unit="ms"):
    for name, summary in ((name_a, summary_a), (name_b, summary_b)):
        if not summary or not summary.get("k"):
            return {"verdict": "not_comparable", "lower": None, "difference": None, "ratio": None,
                    "text": "not comparable: %s has no value" % name}
    a_text = "%s %s (%s)" % (name_a, format_bound(summary_a["median"], unit), _interval_text(summary_a, unit))
    b_text = "%s %s (%s)" % (name_b, format_bound(summary_b["median"], unit), _interval_text(summary_b, unit))
    if _entirely_below(summary_a["interval"], summary_b["interval"]):
        low_name, low, high_name, high = name_a, summary_a, name_b, summary_b
    elif _entirely_below(summary_b["interval"], summary_a["interval"]):
        low_name, low, high_name, high = name_b, summary_b, name_a, summary_a
    else:
        return {"verdict": "not_distinguishable", "lower": None, "difference": None, "ratio": None,
                "text": "not distinguishable at %s: %s and %s overlap" % (
                    _k_text(summary_a, summary_b), a_text, b_text)}
    low_median, high_median = low["median"], high["median"]
    # A censored higher median only bounds the difference from below ("more than").
    difference = _bound(high_median["value"] - low_median["value"], high_median["above"])
    ratio = None
    if low_median["value"] > 0:
        ratio = _bound(high_median["value"] / low_median["value"], high_median["above"])
    more = "more than " if difference["above"] else ""
    how_much = "%s%s less" % (more, format_value(difference["value"], unit))
    if ratio is not None:
        # Below 2x a percentage reads better ("8 % lower"); above it, a factor ("4.5x lower").
        if ratio["value"] < 2:
            how_much += ", %s%.0f %% lower" % (more, 100.0 * (1 - 1 / ratio["value"]))
        else:
            how_much += ", %s%.3gx lower" % (more, ratio["value"])
    text = "%s is lower: median %s vs %s for %s: %s; their intervals do not overlap (%s)" % (
        low_name, format_bound(low_median, unit), format_bound(high_median, unit), high_name, how_much,
        _coverage_text(summary_a, summary_b))
    return {"verdict": "lower", "lower": low_name, "difference": difference, "ratio": ratio, "text": text}
