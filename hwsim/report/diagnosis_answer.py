"""The report's answer to "where does the accuracy go?": from a study's diagnoses (its
``diagnose`` switch), per dataset, the layers that lose most and whether the BN-statistics
shift grows with depth.

The trend test is one-sided (the shift rises with depth): Spearman's rho of the chip's own
shift (chip vs digital, in stored standard deviations, mean over chips) against the BN
layers' order, with a permutation p over the BN layers; the diagnosed conditions (model x
preset) of a dataset are one family, Holm-corrected.
"""

from __future__ import annotations

import math

from hwsim.diagnose.summary import condition_label, loss_share, shift_trend, top_layers
from hwsim.report.answer_base import Answer, Findings, p_text
from hwsim.report.render import Table
from hwsim.stats import holm

QUESTION = "Where does the accuracy go? Layer sensitivity and BN statistics on the chip"
ALPHA = 0.05


def _pp(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f} pp"


def _ci(low: float, high: float) -> str:
    return "" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"


def answer_diagnosis(f: Findings) -> Answer | None:
    """Per diagnosed model and condition: the three layers losing most (with CIs) and the
    BN-statistics shift along the depth (first / middle / last BN layer, trend test)."""
    cases = [(d, t, shift_trend(d, t)) for d in f.diagnoses for t in d.times]
    if not cases:
        return None
    raw = [tr.p if tr is not None and tr.testable else math.nan for _, _, tr in cases]
    adjusted = holm(raw)
    details, rows = [], []
    grows = testable = 0
    for (d, t, tr), p_adj in zip(cases, adjusted):
        m = d.meta
        who = f"{m['arch']} ({'BN ' + m['bn_mode']}), {condition_label(d, t)}"
        whole = d.whole_loss(t)
        top = top_layers(d, t)
        share = loss_share(d, t)
        layers = ", ".join(f"{x.layer.name} ({_pp(x.score)}: alone {_pp(x.only.diff)}"
                           f"{_ci(x.only.low, x.only.high)}, in the whole chip "
                           f"{_pp(x.but.diff)}{_ci(x.but.low, x.but.high)})" for x in top)
        held = "" if math.isnan(share) else f"; they hold {100 * share:.0f}% of the summed " \
                                            "layer losses"
        line = (f"{who}: the whole chip loses {_pp(whole.mean)} (±{100 * whole.ci95:.1f}, "
                f"{whole.n} chips); the layers losing most: {layers}{held}.")
        trend_cell = "no BN"
        if tr is not None:
            if not tr.testable:
                verdict = f"not testable ({tr.n} BN layers)"
            else:
                testable += 1
                up = p_adj < ALPHA and tr.rho > 0
                grows += up
                verdict = (f"{'grows' if up else 'does not grow significantly'} with depth "
                           f"(Spearman ρ = {tr.rho:+.2f}, permutation p = {p_text(tr.p)}, "
                           f"Holm-adjusted {p_text(p_adj)})")
            recal = max(p.values["recal_shift"].mean for p in d.bn_profile(t))
            line += (f" BN-statistics shift, chip vs digital (stored std, RMS over channels), "
                     f"first / middle / last BN layer: {tr.first:.3f} / {tr.middle:.3f} / "
                     f"{tr.last:.3f}: {verdict}; after recalibration at most {recal:.3f}.")
            trend_cell = f"{tr.first:.2f} / {tr.middle:.2f} / {tr.last:.2f}; " + (
                f"ρ {tr.rho:+.2f}, p {p_text(p_adj)}" if tr.testable else "not testable")
        details.append(line)
        rows.append((m["arch"], condition_label(d, t), _pp(whole.mean),
                     "; ".join(f"{x.layer.name} {_pp(x.score)}" for x in top),
                     "n/a" if math.isnan(share) else f"{100 * share:.0f}%", trend_cell))
    if not testable:
        short = "BN-shift trend not testable"
    elif grows == testable:
        short = "The BN-statistics shift grows with depth"
    elif grows:
        short = f"Mixed: the BN-statistics shift grows with depth in {grows} of {testable}"
    else:
        short = "No significant growth of the BN-statistics shift with depth"
    shares = [loss_share(d, t) for d, t, _ in cases]
    shares = [s for s in shares if not math.isnan(s)]
    spread = (f"{100 * min(shares):.0f}-{100 * max(shares):.0f}%" if len(shares) > 1 else
              f"{100 * shares[0]:.0f}%") if shares else "none"
    trend = (f"The BN-statistics shift grows significantly with depth under {grows} of "
             f"{testable} testable {'condition' if testable == 1 else 'conditions'}."
             if testable else
             "Whether the BN-statistics shift grows with depth cannot be tested here: every "
             "diagnosed model has fewer than 4 BN layers (a permutation test over n layers "
             "cannot go below p = 1/n!).")
    answer = (f"On {f.dataset}, the three layers that lose most hold {spread} of the summed "
              f"per-layer losses (ranked by the mean of: only that layer analog, and every "
              f"layer analog but that one; {len(cases)} diagnosed "
              f"{'condition' if len(cases) == 1 else 'conditions'}). {trend}")
    table = Table(("model", "condition", "whole chip", "top 3 layers (mean loss)",
                   "top-3 share", "BN shift first / middle / last; trend"), tuple(rows))
    family = (f"family of {testable} one-sided permutation tests of Spearman's ρ (shift vs "
              "depth), one per diagnosed condition, Holm-corrected") if testable else ""
    figures = tuple(fig for fig in f.figures if fig.kind == "diagnosis")
    return Answer(QUESTION, short, answer, tuple(details), (table,), figures, family)
