"""Statistics for few repetitions: order-statistic coverage, censored runs, comparisons and per-run percentiles."""
import itertools
import random
from fractions import Fraction
from math import comb

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.compare_stats import (
    across_runs, compare, format_coverage, format_value, median_interval, order_interval_coverage, range_coverage,
    run_percentiles, summarize)


def binomial_coverage(k, rank):
    """1 - 2 P(Bin(k, 1/2) <= rank - 1): the median escapes when fewer than `rank` values fall on one side."""
    tail = sum(Fraction(comb(k, i), 2 ** k) for i in range(rank))
    return float(1 - 2 * tail)


def enumerated_coverage(k, rank):
    """Every pattern of values below/above the median, counted: [x(rank), x(k-rank+1)] holds it when at least
    `rank` values lie below and at least `rank` above."""
    inside = sum(1 for signs in itertools.product((0, 1), repeat=k) if rank <= sum(signs) <= k - rank)
    return inside / 2.0 ** k


@pytest.mark.parametrize("k", [3, 5, 6, 10, 20])
def test_range_coverage_is_the_binomial_formula(k):
    assert range_coverage(k) == pytest.approx(binomial_coverage(k, 1), abs=1e-15)
    assert range_coverage(k) == pytest.approx(1 - 2.0 / 2 ** k, abs=1e-15)
    for rank in range(1, k // 2 + 1):
        assert order_interval_coverage(k, rank) == pytest.approx(binomial_coverage(k, rank), abs=1e-15)
    if k <= 10:
        for rank in range(1, k // 2 + 1):
            assert order_interval_coverage(k, rank) == pytest.approx(enumerated_coverage(k, rank), abs=1e-15)


@pytest.mark.parametrize("k, minmax, interval, coverage", [
    (3, 0.75, None, None),
    (5, 0.9375, None, None),
    (6, 0.96875, (1, 6), 0.96875),
    (10, 1022 / 1024.0, (2, 9), 1002 / 1024.0),
    (20, 1 - 2.0 / 2 ** 20, (6, 15), 1 - 2 * 21700 / 2.0 ** 20),
])
def test_coverage_table_of_comparison_md(k, minmax, interval, coverage):
    assert range_coverage(k) == pytest.approx(minmax)
    found = median_interval(k)
    if interval is None:
        assert found is None
        return
    assert found[:2] == interval
    assert found[2] == pytest.approx(coverage)
    assert found[2] >= 0.95
    # The next narrower interval falls below 95 %: this one is the narrowest.
    assert order_interval_coverage(k, interval[0] + 1) < 0.95


def test_range_coverage_holds_for_real_samples():
    """Simulated K=5 runs from a skewed distribution: [min, max] holds the true median about 93.8 % of the time."""
    rng = random.Random(5)
    true_median = 0.6931471805599453  # of an exponential with rate 1: ln 2
    trials = 20000
    held = 0
    for _trial in range(trials):
        sample = [rng.expovariate(1.0) for _k in range(5)]
        held += min(sample) <= true_median <= max(sample)
    assert held / float(trials) == pytest.approx(range_coverage(5), abs=0.01)


def test_order_interval_coverage_edges_and_bad_input():
    assert order_interval_coverage(1, 1) == 0.0
    assert order_interval_coverage(2, 1) == 0.5
    assert order_interval_coverage(0, 1) == 0.0
    assert order_interval_coverage(5, 4) == 0.0
    with pytest.raises(ValueError, match="k=-1"):
        order_interval_coverage(-1, 1)
    with pytest.raises(ValueError, match="rank=0"):
        order_interval_coverage(5, 0)


def test_summary_keeps_every_raw_value_in_order():
    values = [2610.0, 2580.0, 2700.0, 2650.0, 2590.0]
    summary = summarize(values)
    assert summary["k"] == 5 and summary["values"] == values and summary["censored"] == 0
    assert summary["median"] == {"value": 2610.0, "above": False}
    assert summary["min"] == {"value": 2580.0, "above": False}
    assert summary["max"] == {"value": 2700.0, "above": False}
    assert summary["range_coverage"] == 0.9375
    assert summary["ci95"] is None and summary["p95"] is None
    assert summary["interval"] == {"kind": "range", "low": summary["min"], "high": summary["max"],
                                   "coverage": 0.9375}
    assert summarize([4.0, 1.0, 3.0, 2.0])["median"] == {"value": 2.5, "above": False}
    empty = summarize([])
    assert empty["k"] == 0 and empty["median"] is None and empty["interval"] is None


def test_summary_interval_and_p95_from_k():
    ten = summarize([float(v) for v in (10, 1, 9, 2, 8, 3, 7, 4, 6, 5)])
    assert ten["ci95"]["low_rank"] == 2 and ten["ci95"]["high_rank"] == 9
    assert ten["ci95"]["low"]["value"] == 2.0 and ten["ci95"]["high"]["value"] == 9.0
    assert ten["interval"]["kind"] == "ci95" and ten["p95"] is None
    twenty = summarize([float(v) for v in range(20, 0, -1)])
    assert twenty["p95"] == {"value": 19.0, "above": False}  # nearest rank: ceil(0.95 * 20) = 19
    assert (twenty["ci95"]["low"]["value"], twenty["ci95"]["high"]["value"]) == (6.0, 15.0)
    assert summarize([1.0] * 19)["p95"] is None


def test_censored_runs_are_counted_and_kept():
    one = summarize([5400.0, None, 5100.0], censor_at=60000)
    assert one["values"] == [5400.0, None, 5100.0] and one["censored"] == 1
    assert one["median"] == {"value": 5400.0, "above": False}
    assert one["max"] == {"value": 60000.0, "above": True}
    two = summarize([5400.0, None, None], censor_at=60000)
    assert two["median"] == {"value": 60000.0, "above": True}  # more than half censored: "> timeout"
    assert two["min"] == {"value": 5400.0, "above": False}
    half = summarize([1000.0, 3000.0, None, None], censor_at=60000)
    assert half["median"] == {"value": (3000.0 + 60000.0) / 2, "above": True}
    every = summarize([None, None, None], censor_at=60000)
    assert every["min"] == {"value": 60000.0, "above": True} and every["censored"] == 3
    six = summarize([1.0, 2.0, 3.0, 4.0, 5.0, None], censor_at=10)
    assert six["ci95"]["high"] == {"value": 10.0, "above": True}


def test_summary_refuses_bad_values():
    with pytest.raises(ValueError, match="give censor_at"):
        summarize([1.0, None])
    with pytest.raises(ValueError, match=r"values\[1\]='3'"):
        summarize([1.0, "3"])
    with pytest.raises(ValueError, match=r"values\[0\]=True"):
        summarize([True])
    with pytest.raises(ValueError, match="above censor_at=10"):
        summarize([11.0, None], censor_at=10)
    with pytest.raises(ValueError, match="finite"):
        summarize([float("nan")])


def test_overlapping_intervals_are_not_distinguishable():
    a = summarize([2610.0, 2580.0, 2700.0, 2650.0, 2590.0])
    b = summarize([2600.0, 2800.0, 2500.0, 2750.0, 2640.0])
    result = compare("vm-epmd", a, "vm-gossip", b)
    assert result["verdict"] == "not_distinguishable" and result["lower"] is None
    assert result["text"] == (u"not distinguishable at K=5: vm-epmd 2.61 s (2.58 s\u20132.70 s) and vm-gossip "
                              u"2.64 s (2.50 s\u20132.80 s) overlap")
    c = summarize([2700.0, 2900.0, 2750.0])
    assert compare("a", a, "c", c)["text"].startswith("not distinguishable at K=5 and K=3: ")
    # Touching ends overlap: the same value was seen on both.
    assert compare("x", summarize([1.0, 2.0, 3.0]), "y", summarize([3.0, 4.0, 5.0]))["verdict"] == \
        "not_distinguishable"


def test_separate_intervals_say_which_is_lower_and_by_how_much():
    fast = summarize([4.2, 3.9, 5.0, 4.4, 4.1])
    slow = summarize([2610.0, 2580.0, 2700.0, 2650.0, 2590.0])
    result = compare("slow", slow, "fast", fast)
    assert result["verdict"] == "lower" and result["lower"] == "fast"
    assert result["difference"] == {"value": pytest.approx(2605.8), "above": False}
    assert result["ratio"]["value"] == pytest.approx(2610 / 4.2)
    assert result["text"] == ("fast is lower: median 4.2 ms vs 2.61 s for slow: 2.61 s less, 621x lower; their "
                              "intervals do not overlap (K=5: each interval covers its median with 93.8 %)")
    near = compare("a", summarize([100.0, 101.0, 102.0]), "b", summarize([110.0, 111.0, 112.0]))
    assert "10 ms less, 9 % lower" in near["text"] and "(K=3: each interval covers its median with 75.0 %)" \
        in near["text"]
    ten = summarize([float(v) for v in range(1, 11)])
    assert "K=10: each interval covers its median with 97.9 %" in compare(
        "a", ten, "b", summarize([float(v) for v in range(20, 30)]))["text"]


def test_comparison_with_a_censored_side_is_a_bound():
    healed = summarize([1200.0, 900.0, 1500.0])
    never = summarize([None, None, 5100.0], censor_at=60000)
    result = compare("vm-epmd", healed, "vm-gossip", never)
    assert result["lower"] == "vm-epmd"
    assert result["difference"] == {"value": 58800.0, "above": True}
    assert "median 1.20 s vs > 60.0 s for vm-gossip: more than 58.8 s less, more than 50x lower" in result["text"]
    # A censored run at the top of the range keeps the ranges open-ended: [5.1 s, > 60 s] overlaps [50 s, 55 s].
    assert compare("a", summarize([5100.0, None], censor_at=60000), "b",
                   summarize([50000.0, 55000.0]))["verdict"] == "not_distinguishable"
    assert compare("a", summarize([]), "b", healed)["verdict"] == "not_comparable"


def test_percentiles_per_run_then_median_across_runs():
    run = run_percentiles([float(v) for v in range(100, 0, -1)])
    assert run["n"] == 100 and run["timed_out"] == 0
    assert [run[k]["value"] for k in ("p50", "p95", "p99", "max")] == [50.0, 95.0, 99.0, 100.0]
    stalled = run_percentiles([1.0] * 98 + [None, None], timeout=1000)
    assert stalled["timed_out"] == 2
    assert stalled["p95"] == {"value": 1.0, "above": False}
    assert stalled["p99"] == {"value": 1000.0, "above": True} and stalled["max"]["above"]
    # Three runs whose p99 are 1, 2 and 30 ms: the median is 2 ms; an average (11 ms) would be no run's p99.
    runs = [run_percentiles([0.5] * 98 + [tail, tail]) for tail in (1.0, 2.0, 30.0)]
    across = across_runs(runs)
    assert across["p99"]["median"] == {"value": 2.0, "above": False}
    assert across["p99"]["values"] == [1.0, 2.0, 30.0] and across["p50"]["median"]["value"] == 0.5
    with_timeouts = across_runs(runs[:2] + [stalled], censor_at=1000)
    assert with_timeouts["p99"]["censored"] == 1 and with_timeouts["p99"]["values"][2] is None
    with pytest.raises(ValueError, match=r"runs\[0\]\.p50 is missing"):
        across_runs([{"p95": {"value": 1.0, "above": False}}])
    with pytest.raises(ValueError, match="samples is empty"):
        run_percentiles([])


def test_format_value():
    assert format_value(0.21) == "0.21 ms"
    assert format_value(4.2) == "4.2 ms"
    assert format_value(412) == "412 ms"
    assert format_value(2610) == "2.61 s"
    assert format_value(60000, above=True) == "> 60.0 s"
    assert format_value(812.4, "s") == "812 s"
    assert format_value(2, "count") == "2"
    assert format_value(118.25, "MiB/s") == "118 MiB/s"
    assert format_coverage(0.9375) == "93.8 %"
    assert format_coverage(range_coverage(20)) == "> 99.9 %"
