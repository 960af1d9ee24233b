"""Monte-Carlo results: plain records, their summary per time, and the files they go to.

:func:`summarize_records` adds mean, std, 95% confidence interval and accuracy normalised by
the digital accuracy (:mod:`hwsim.stats` conventions).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hwsim import stats
from hwsim.util.runtime import atomic_write, check_writable
from hwsim.util.timefmt import format_time
from hwsim.validate import SettingError


@dataclass(frozen=True)
class Record:
    """One Monte-Carlo sample: accuracy of chip ``repeat`` at time ``t_inference``."""

    t_inference: float | None  # None for a preset without drift
    repeat: int
    accuracy: float


@dataclass
class TimeSummary:
    t_inference: float | None
    n: int
    mean: float
    std: float
    ci95: float  # half-width of the 95% confidence interval of the mean (Student t)
    normalized: float  # mean / digital accuracy


@dataclass
class InferResult:
    meta: dict
    digital_accuracy: float
    records: list[Record]
    summary: list[TimeSummary] = field(default_factory=list)
    seconds: float = 0.0
    recal_seconds: list[float] = field(default_factory=list)  # one per recalibration
    note: str = ""  # what the on-the-fly conversion said (e.g. fold had nothing to fold)


def summarize_records(records: list[Record], digital_accuracy: float) -> list[TimeSummary]:
    """Per inference time: n, mean, sample std, 95% CI half-width, normalised mean
    (:mod:`hwsim.stats` conventions: std and CI are NaN for a single repeat)."""
    by_t: dict[float | None, list[float]] = {}
    for r in records:
        by_t.setdefault(r.t_inference, []).append(r.accuracy)
    out = []
    for t in sorted(by_t, key=lambda v: -1.0 if v is None else v):
        s = stats.summarize(by_t[t])
        out.append(TimeSummary(t, s.n, s.mean, s.std, s.ci95,
                           s.mean / digital_accuracy if digital_accuracy else float("nan")))
    return out


RESULT_FORMATS = (".json", ".csv")


def check_results_path(path: str | Path) -> Path:
    """ConfigError unless ``path`` ends in .json or .csv and can be written (checked before a
    run, so that a bad path costs nothing)."""
    path = Path(path)
    if path.suffix.lower() not in RESULT_FORMATS:
        raise SettingError("out", f"{path}: unknown results format "
                                  f"{path.suffix or '(none)'!r}; name a "
                                  f"{' or '.join(RESULT_FORMATS)} file")
    check_writable(path, what="results file")
    return path


def write_results(result: InferResult, path: str | Path) -> Path:
    """Write every record with metadata: JSON (``.json``) or CSV (``.csv``, metadata as
    ``#`` comment lines).

    Raises:
        ConfigError: another extension, or a path that cannot be written.
    """
    path = check_results_path(path)
    if path.suffix.lower() == ".csv":
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                head = {"meta": result.meta, "digital_accuracy": result.digital_accuracy}
                f.write(f"# {json.dumps(head)}\n")
                w = csv.writer(f)
                w.writerow(["t_inference_s", "repeat", "accuracy", "normalized"])
                for r in result.records:
                    w.writerow(["" if r.t_inference is None else r.t_inference, r.repeat,
                                r.accuracy, r.accuracy / result.digital_accuracy])
    else:
        payload = {"meta": result.meta, "digital_accuracy": result.digital_accuracy,
                   "seconds": result.seconds, "summary": [asdict(s) for s in result.summary],
                   "records": [asdict(r) for r in result.records]}

        def write(tmp: str) -> None:
            Path(tmp).write_text(json.dumps(payload, indent=1))
    atomic_write(path, write)
    return path


def format_table(result: InferResult) -> str:
    """The summary as a text table."""
    m = result.meta
    head = (f"{m['arch']} ({'BN ' + m['bn_mode'] if m['bn'] else 'no BN'}) on {m['dataset']}, "
            f"preset {m['preset']['name']}, engine {m['settings']['engine']}, "
            f"{m['settings']['repeats']} repeats, {m['test_split']}")
    lines = [head, f"digital accuracy: {100 * result.digital_accuracy:.2f}%",
             f"{'t':>8} {'mean %':>8} {'std %':>7} {'95% CI %':>17} {'normalized':>10}"]
    calib = m.get("calibration")
    if calib and calib["seconds_each"] is not None:
        lines.insert(2, f"BN recalibrated on {calib['images']} training images for each chip "
                        f"and time ({calib['seconds_each']:.3f} s each)")
    for s in result.summary:
        lo, hi = s.mean - s.ci95, s.mean + s.ci95
        ci = f"[{100 * lo:6.2f}, {100 * hi:6.2f}]" if s.n > 1 else "n/a"
        std = f"{100 * s.std:7.2f}" if s.n > 1 else f"{'n/a':>7}"
        lines.append(f"{format_time(s.t_inference):>8} {100 * s.mean:8.2f} {std} "
                     f"{ci:>17} {s.normalized:10.4f}")
    return "\n".join(lines)
