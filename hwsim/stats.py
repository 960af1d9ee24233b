"""Every statistic hwsim reports, in one place, backed by :mod:`scipy.stats`.

Conventions (the same in ``hwsim infer``, the study store and the report):

* a sample of ``n`` values has its mean, its sample standard deviation (``ddof=1``) and the
  half-width of the Student-t 95% confidence interval of the mean;
* with ``n == 1`` the spread is undefined: ``std`` and ``ci95`` are NaN (printed "n/a"),
  never 0; with ``n == 0`` the mean is NaN too;
* two samples are compared by the difference of their means and its Welch 95% CI
  (Welch–Satterthwaite degrees of freedom); fewer than two values on a side gives a NaN CI;
* a test (:class:`Test`) carries that difference, its CI and its two-sided p-value: Welch's
  ``ttest_ind`` for independent samples (:func:`welch_test`), ``ttest_rel`` for paired ones
  (:func:`paired_test`); a family of p-values is corrected with Holm's step-down method
  (:func:`holm`); a monotone trend over a few points is tested by an exact permutation test of
  Spearman's rho (:func:`spearman_trend`).

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


@dataclass(frozen=True)
class Test:
    """``a − b`` (mean difference), its 95% CI, degrees of freedom and two-sided p-value."""

    diff: float
    low: float
    high: float
    dof: float
    p: float  # NaN when undefined (fewer than two samples, or no spread and no difference)


_NAN_TEST = Test(math.nan, math.nan, math.nan, math.nan, math.nan)


def welch_test(a: Sequence[float], b: Sequence[float]) -> Test:
    """Welch's t test of mean(a) = mean(b) (``scipy.stats.ttest_ind``, unequal variances).

    With no spread on either side, a non-zero difference is certain (p = 0) and a zero one
    undecidable (p NaN).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return _NAN_TEST
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Test(diff, math.nan, math.nan, math.nan, math.nan)
    if a.var(ddof=1) + b.var(ddof=1) <= 1e-24:  # no spread
        return Test(diff, diff, diff, math.inf, 0.0 if abs(diff) > 1e-9 else math.nan)
    with warnings.catch_warnings():  # scipy warns about precision on near-equal samples
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(0.95)
    return Test(diff, float(ci.low), float(ci.high), float(res.df), float(res.pvalue))


def paired_test(a: Sequence[float], b: Sequence[float]) -> Test:
    """Paired t test of mean(a − b) = 0 (``scipy.stats.ttest_rel``); ``a[i]`` pairs ``b[i]``.

    Fewer than two pairs: NaN CI and p. Identical differences (no spread): zero-width CI,
    p = 0 unless the difference is 0 (then NaN).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) == 0:
        return _NAN_TEST
    d = a - b
    diff = float(d.mean())
    if len(d) < 2:
        return Test(diff, math.nan, math.nan, math.nan, math.nan)
    if float(d.std(ddof=1)) <= 1e-12 * max(1.0, abs(diff)):
        return Test(diff, diff, diff, math.inf, 0.0 if abs(diff) > 1e-9 else math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.ttest_rel(a, b)
        ci = res.confidence_interval(0.95)
    return Test(diff, float(ci.low), float(ci.high), float(res.df), float(res.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate); NaNs stay NaN and do not
    count towards the family size.

    scipy.stats offers Benjamini–Hochberg (``false_discovery_control``) but not Holm; Holm is
    the step-down Bonferroni: the i-th smallest of m p-values is multiplied by m − i + 1,
    then made monotone.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        adj = np.maximum.accumulate(p[order] * (m - np.arange(m)))
        out[order] = np.minimum(adj, 1.0)
    return [float(v) for v in out]


def spearman_trend(x: Sequence[float], y: Sequence[float], *,
                   resamples: int = 9_999) -> tuple[float, float]:
    """Spearman's rho of ``y`` against ``x`` and its one-sided permutation p-value
    (H1: y rises with x) (``scipy.stats.permutation_test``, ``permutation_type='pairings'``):
    exact, by enumerating every pairing, while n! <= ``resamples`` (n <= 7; with n points the
    smallest possible p is then 1/n!), else over ``resamples`` random pairings drawn from a
    fixed seed (the p-value counts the observed pairing, so it is at least 1/(resamples+1)).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def rho(xs, ys, axis=-1):  # Spearman's rho = Pearson's r of the ranks, vectorised
        rx = _st.rankdata(xs, axis=axis) - (xs.shape[axis] + 1) / 2
        ry = _st.rankdata(ys, axis=axis) - (ys.shape[axis] + 1) / 2
        return (rx * ry).sum(axis) / np.sqrt((rx**2).sum(axis) * (ry**2).sum(axis))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exact = math.factorial(len(x)) <= resamples
        res = _st.permutation_test((x, y), rho, permutation_type="pairings", vectorized=True,
                                   alternative="greater",
                                   n_resamples=math.inf if exact else resamples,
                                   rng=None if exact else np.random.default_rng(0))
    return float(_st.spearmanr(x, y).statistic), float(res.pvalue)


def min_trend_p(n: int) -> float:
    """The smallest p-value an exact permutation test over ``n`` points can reach (1/n!)."""
    return 1.0 / math.factorial(n)


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of guessing uniformly among ``num_classes`` classes."""
    return 1.0 / num_classes


def learned_threshold(num_classes: int, factor: float = LEARNED_FACTOR) -> float:
    """The digital accuracy a model must reach to count as having learned."""
    return min(1.0, factor * chance_accuracy(num_classes))


def has_learned(accuracy: float, num_classes: int, factor: float = LEARNED_FACTOR) -> bool:
    """Whether digital ``accuracy`` is clearly above chance (at least ``factor`` × chance)."""
    return accuracy >= learned_threshold(num_classes, factor)
