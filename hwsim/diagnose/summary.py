"""A diagnosis in words and numbers: the layers that lose most, the BN-statistics profile and
its trend with depth, the error along the depth (what ``hwsim diagnose`` prints)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim import stats
from hwsim.diagnose.results import Diagnosis, LayerLoss
from hwsim.util.timefmt import format_time

ALPHA = 0.05


def condition_label(diag: Diagnosis, t) -> str:
    eta = diag.meta.get("eta")
    where = diag.meta["preset"] + (f" eta {eta:g}" if eta is not None else "")
    return where + (f" at {format_time(t)}" if t is not None else "")


@dataclass(frozen=True)
class ShiftTrend:
    """Spearman's rho of the chip's BN-statistics shift (mean over chips) against depth,
    with its one-sided permutation p (H1: the shift grows with depth)."""

    field: str
    rho: float
    p: float
    n: int
    first: float
    middle: float
    last: float

    @property
    def grows(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA and self.rho > 0

    @property
    def testable(self) -> bool:
        """Whether the permutation test can reach p < 0.05 at all (4 or more BN layers)."""
        return stats.min_trend_p(self.n) < ALPHA

    @property
    def verdict(self) -> str:
        if not self.testable:
            return f"cannot be tested for a trend ({self.n} BN layers: smallest p 1/{self.n}!)"
        return "grows" if self.grows else "does not grow significantly"


def shift_trend(diag: Diagnosis, t, field: str = "chip_shift") -> ShiftTrend | None:
    """The trend of ``field`` along the BN layers at ``t``; None without 3 BN layers."""
    prof = diag.bn_profile(t)
    if len(prof) < 3:
        return None
    m = [p.values[field].mean for p in prof]
    rho, p = stats.spearman_trend([p.depth for p in prof], m)
    return ShiftTrend(field, rho, p, len(prof), m[0], m[len(m) // 2], m[-1])


def top_layers(diag: Diagnosis, t, k: int = 3) -> list[LayerLoss]:
    return diag.layer_losses(t)[:k]


def loss_share(diag: Diagnosis, t, k: int = 3) -> float:
    """The share of the summed positive layer scores (:attr:`LayerLoss.score`) that the top
    ``k`` layers hold."""
    losses = [max(x.score, 0.0) for x in diag.layer_losses(t) if not math.isnan(x.score)]
    total = sum(losses)
    return sum(losses[:k]) / total if total > 0 else math.nan


def _pp(test: stats.Test) -> str:
    ci = "" if math.isnan(test.low) else f" [{100 * test.low:+.1f}, {100 * test.high:+.1f}]"
    return f"{100 * test.diff:+.1f} pp{ci}"


def format_summary(diag: Diagnosis, top: int = 5) -> str:
    """The summary ``hwsim diagnose`` prints (and ``diagnosis.md`` carries)."""
    m = diag.meta
    lines = [f"{m['arch']} ({'BN ' + m['bn_mode'] if m['bn'] else 'no BN'}) on {m['dataset']},"
             f" preset {m['preset']}" + (f" eta {m['eta']:g}" if m.get("eta") is not None
                                         else "") + f", engine {m['engine']}",
             f"digital accuracy {100 * diag.digital_accuracy:.2f}% on the {m['test_split']}; "
             f"{m['settings']['repeats']} chips; per-layer runs: {m['evaluations']} "
             f"evaluations of {m['n_test']} test images ((2 x {len(diag.layers)} layers + 1) "
             f"x chips x times); {diag.seconds:.1f} s"]
    for t in diag.times:
        whole = diag.whole_loss(t)
        lines += ["", f"== {condition_label(diag, t)}: whole chip loses "
                      f"{100 * whole.mean:.1f} pp (95% CI +-{100 * whole.ci95:.1f})"]
        lines.append(f"layers losing most (ranked by the mean of: only this layer analog; all "
                     f"analog but this one), "
                     f"{_share_text(diag, t)}:")
        for x in diag.layer_losses(t)[:top]:
            info = x.layer
            lines.append(f"  {info.name:<22} {str(tuple(info.shape)):<18} "
                         f"{100 * info.share:5.1f}% of weights  BN: {info.bn or '-':<14} "
                         f"only {_pp(x.only)}; but {_pp(x.but)}")
        prof = diag.bn_profile(t)
        if prof:
            lines.append(f"BN statistics on {m['bn_images']} (first / middle / last BN layer):")
            picks = [prof[0], prof[len(prof) // 2], prof[-1]]
            for label, f in (("shift chip vs stored (stored std)", "shift"),
                             ("  floor: digital vs stored", "digital_shift"),
                             ("  chip vs digital", "chip_shift"),
                             ("variance ratio chip / stored", "var_ratio"),
                             ("shift after recalibration", "recal_shift"),
                             ("variance ratio after recalibration", "recal_var_ratio")):
                lines.append(f"  {label:<36} " + " / ".join(
                    f"{p.values[f].mean:.3f}" for p in picks) +
                    f"  ({picks[0].name}, {picks[1].name}, {picks[2].name})")
            trend = shift_trend(diag, t)
            if trend:
                lines.append(f"  the chip's shift {trend.verdict} with depth: Spearman rho "
                             f"{trend.rho:+.2f}, permutation p {trend.p:.3g} over {trend.n} "
                             f"BN layers")
        for model in ("main", "compare"):
            prof_d = diag.depth_profile(t, model)
            if prof_d:
                who = "this model" if model == "main" else \
                    f"--compare ({'BN' if m['compare']['bn'] else 'no BN'})"
                mid = prof_d[len(prof_d) // 2][2].mean
                lines.append(f"error along the depth, {who} ({m['depth_images']}): first "
                             f"{prof_d[0][2].mean:.3f}, middle {mid:.3f}, last "
                             f"{prof_d[-1][2].mean:.3f}")
    return "\n".join(lines)


def _share_text(diag: Diagnosis, t) -> str:
    share = loss_share(diag, t)
    if math.isnan(share):
        return "no layer loses accuracy on its own"
    return f"the top 3 hold {100 * share:.0f}% of the summed layer losses"
