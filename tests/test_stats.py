"""The statistics module: one convention everywhere, checked against scipy's own formulas."""

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from hwsim.inference.results import Record
from hwsim.inference.results import summarize_records as summarize_records
from hwsim.stats import has_learned, learned_threshold, summarize, welch_ci


def test_summary_matches_student_t():
    s = summarize([0.8, 0.9, 1.0, 0.7])
    std = np.std([0.8, 0.9, 1.0, 0.7], ddof=1)
    assert s.n == 4 and s.mean == pytest.approx(0.85) and s.std == pytest.approx(std)
    assert s.ci95 == pytest.approx(student_t.ppf(0.975, 3) * std / 2)


def test_single_sample_has_undefined_spread_everywhere():
    s = summarize([0.5])
    assert s.n == 1 and s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.ci95)
    (r,) = summarize_records([Record(1.0, 0, 0.5)], 1.0)  # hwsim infer: the same convention
    assert math.isnan(r.std) and math.isnan(r.ci95)
    assert math.isnan(summarize([]).mean)


def test_welch_interval_matches_the_textbook_formula():
    a, b = [0.9, 0.85, 0.95, 0.92], [0.6, 0.7, 0.5, 0.65, 0.55]
    diff, low, high, dof = welch_ci(a, b)
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    half = student_t.ppf(0.975, df) * math.sqrt(va + vb)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high, dof) == pytest.approx((diff - half, diff + half, df))
    assert all(math.isnan(v) for v in welch_ci([0.5], b)[1:])
    assert welch_ci([0.5, 0.5], [0.4, 0.4]) == pytest.approx((0.1, 0.1, 0.1, math.inf))


@pytest.mark.parametrize("acc,classes,learned", [(0.10, 10, False), (0.19, 10, False),
                                                 (0.20, 10, True), (0.05, 100, True),
                                                 (0.015, 100, False)])
def test_learned_means_at_least_twice_chance(acc, classes, learned):
    assert has_learned(acc, classes) is learned
    assert learned_threshold(10, factor=3.0) == pytest.approx(0.3)
