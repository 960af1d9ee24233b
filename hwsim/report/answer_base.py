"""What every answer builder shares: the :class:`Answer` it returns, the :class:`Findings` it
reads, and how counts, percentages and p-values are worded."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwsim.report.analysis import TOO_FEW, Group, PaperMetric
from hwsim.report.figures import FigureSpec
from hwsim.report.render import Table
from hwsim.report.trends import Trend
from hwsim.report.verdicts import ONE_MODEL, Comparison, Verdict, count_outcomes
from hwsim.stats import Stat


@dataclass(frozen=True)
class Answer:
    """One question and its answer: a short verdict ("Yes", "Mixed", "Not answered"...), the
    sentence that gives its numbers, then supporting lines, tables and figures."""

    question: str
    short: str
    answer: str
    details: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    family: str = ""  # the tests behind the short answer and their correction


@dataclass(frozen=True)
class Findings:
    """What the answer builders read, for one dataset (unlearned models already left out)."""

    dataset: str
    verdicts: list[Verdict]
    paper_metrics: list[PaperMetric]
    trends: list[Trend]
    presets: dict[str, dict]  # resolved presets by name, as recorded in the store
    figures: list[FigureSpec] = field(default_factory=list)  # this dataset's figures
    groups: list[Group] = field(default_factory=list)  # this dataset's groups of learned models
    remedies: list[Comparison] = field(default_factory=list)  # the remedies' comparisons
    # BN recalibration per model id: {"calib_size", "seconds" (total), "count"} (store meta)
    recalibration: dict[str, dict] = field(default_factory=dict)
    # hwsim.diagnose.Diagnosis of this dataset's diagnosed models (a study's diagnose switch)
    diagnoses: list = field(default_factory=list)


# ------------------------------------------------------------------ formatting


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def pp(v: float) -> str:
    return f"{100 * v:+.1f} pp"


def mean_ci(s: Stat) -> str:
    """``"80.0 ± 1.2"`` (%, mean ± 95% CI half-width); n/a where undefined."""
    if s.n == 0 or math.isnan(s.mean):
        return "n/a"
    return f"{100 * s.mean:.1f} ± " + ("n/a" if math.isnan(s.ci95) else f"{100 * s.ci95:.1f}")


def count_text(verdicts: list[Verdict], outcomes: tuple[tuple[str, str], ...]) -> str:
    """E.g. "better in 0, no significant difference in 2", then the count without a CI."""
    counts = count_outcomes(verdicts)
    parts = [f"{text} in {counts.get(o, 0)}" for o, text in outcomes]
    if counts.get(TOO_FEW):
        parts.append(f"too few samples for a CI in {counts[TOO_FEW]}")
    return ", ".join(parts)


def headline_word(verdicts: list[Verdict], yes: str, no: str, opposite: str) -> str:
    """A few words that sum up the outcome counts (the counts always follow them): "Yes" when
    ``yes`` is the outcome of at least half the comparisons and ``no`` of none; ``opposite``
    says what the ``no`` outcome means ("folding hurts")."""
    counts = count_outcomes(verdicts)
    n, y, o = len(verdicts), counts.get(yes, 0), counts.get(no, 0)
    if counts.get(TOO_FEW, 0) == n:
        return "Undecided"
    if y and o:
        return "Mixed"
    if y:
        return "Yes" if 2 * y >= n else "In some conditions"
    if o:
        return (f"No — {opposite}" if 2 * o >= n
                else f"Mostly no significant difference; {opposite} in some conditions")
    return "No significant difference"


def unit(verdicts: list[Verdict]) -> str:
    """" (1 trained model per arm: ...)" when the verdicts compare single trained models."""
    return f" {ONE_MODEL}" if any(v.chip_level for v in verdicts) else ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def p_text(p: float | None) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"
