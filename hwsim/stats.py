"""Every statistic hwsim reports, in one place, backed by :mod:`scipy.stats`.

Conventions (the same in ``hwsim infer``, the study store and the report):

* a sample of ``n`` values has its mean, its sample standard deviation (``ddof=1``) and the
  half-width of the Student-t 95% confidence interval of the mean;
* with ``n == 1`` the spread is undefined: ``std`` and ``ci95`` are NaN (printed "n/a"),
  never 0; with ``n == 0`` the mean is NaN too;
* two samples are compared by the difference of their means and its Welch 95% CI
  (Welch–Satterthwaite degrees of freedom); fewer than two values on a side gives a NaN CI.

It also holds the rule that decides whether a trained model learned at all: a model whose
digital accuracy is not clearly above chance loses nothing to noise (its normalised accuracy
is 100% at every level), so its robustness means nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

# A model has learned when its digital test accuracy is at least this multiple of chance
# (1 / number of classes): 20% for 10 classes. Study files may override it (learned_factor).
LEARNED_FACTOR = 2.0


@dataclass(frozen=True)
class Stat:
    """Mean of ``n`` samples, their sample std and the 95% CI half-width of the mean."""

    n: int
    mean: float
    std: float  # NaN when n < 2
    ci95: float  # NaN when n < 2

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def summarize(values: Iterable[float]) -> Stat:
    """n, mean, sample std and Student-t 95% CI half-width of the mean (NaNs are dropped)."""
    vals = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(vals)
    if n == 0:
        return Stat(0, math.nan, math.nan, math.nan)
    mean = float(vals.mean())
    if n == 1:
        return Stat(1, mean, math.nan, math.nan)
    std = float(vals.std(ddof=1))
    if std == 0.0:
        return Stat(n, mean, 0.0, 0.0)
    _, high = _st.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Stat(n, mean, std, float(high - mean))


def welch_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """mean(a) − mean(b) and its Welch 95% CI: ``(diff, low, high, dof)``.

    With fewer than two samples on a side the CI is NaN; with no spread on either side it
    has zero width (dof = inf).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, diff, diff, math.inf
    with warnings.catch_warnings():  # scipy warns about precision on near-equal samples
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(0.95)
    return diff, float(ci.low), float(ci.high), float(res.df)


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of guessing uniformly among ``num_classes`` classes."""
    return 1.0 / num_classes


def learned_threshold(num_classes: int, factor: float = LEARNED_FACTOR) -> float:
    """The digital accuracy a model must reach to count as having learned."""
    return min(1.0, factor * chance_accuracy(num_classes))


def has_learned(accuracy: float, num_classes: int, factor: float = LEARNED_FACTOR) -> bool:
    """Whether digital ``accuracy`` is clearly above chance (at least ``factor`` × chance)."""
    return accuracy >= learned_threshold(num_classes, factor)
