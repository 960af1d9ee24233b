"""The remedies' answer: BN recalibrated and hardware-aware training (HWA), each compared with
the variant it should improve, and the paper's comparison (BN vs no BN) once remedied."""

from __future__ import annotations

from hwsim.report.analysis import (
    BN_RECAL,
    NO_BN,
    NO_DIFFERENCE,
    SIGNIFICANT,
    Group,
    condition_label,
    none_first,
    split_variant,
    variant_order,
)
from hwsim.report.answer_base import Answer, Findings, count_text, mean_ci, plural, pp, unit
from hwsim.report.render import Table
from hwsim.report.verdicts import CLAIM_1, Verdict, family_text

REMEDIES_QUESTION = ("Remedies — does the paper's finding survive BN recalibration and "
                     "hardware-aware training?")


def answer_remedies(f: Findings) -> Answer | None:
    """The remedies: BN recalibrated and hardware-aware training (HWA), each compared with the
    variant it should improve, and the paper's comparison (BN vs no BN) once remedied."""
    names = {c.name for c in f.remedies}
    mine = [v for v in f.verdicts if v.comparison in names and not v.paper_metric]
    if not mine:
        return None
    # the paper's finding with a remedy: BN (recalibrated, or trained hardware-aware) vs no
    # BN; a "harm" tone means BN is still worse beyond the CI
    vs_no_bn = [c for c in f.remedies if c.a.startswith(NO_BN) and c.positive_is_harm]
    survive = [v for v in mine if v.comparison in {c.name for c in vs_no_bn}]
    details = []
    if survive:
        harm = sum(v.tone == "harm" for v in survive)
        benefit = sum(v.tone == "benefit" for v in survive)
        n = len(survive)
        word = _survives(harm, benefit, n, sum(v.tone == "n/a" for v in survive))
        parts = []
        for c in vs_no_bn:
            vs = [v for v in survive if v.comparison == c.name]
            if vs:
                parts.append(f"{c.b} vs {c.a}: worse in {sum(v.tone == 'harm' for v in vs)} "
                             f"of {len(vs)}, better in {sum(v.tone == 'benefit' for v in vs)}")
        answer = (f"Once remedied, BN is still worse than no BN{SIGNIFICANT} in {harm} of "
                  f"{plural(n, 'comparison')}, better in {benefit}, with no significant "
                  f"difference in {sum(v.tone == 'none' for v in survive)} ("
                  + "; ".join(parts) + ")." + unit(survive))
    else:
        word = "Not measured against no BN"
        answer = ("No remedied BN variant was measured beside no BN under the same conditions; "
                  "the remedies' own effects follow.")
    claim = [v for v in f.verdicts if v.comparison == CLAIM_1.name and not v.paper_metric]
    if claim:
        details.append(f"Without a remedy ({CLAIM_1.difference}, standard training): BN kept "
                       f"is worse in {sum(v.tone == 'harm' for v in claim)} of "
                       f"{len(claim)}, better in {sum(v.tone == 'benefit' for v in claim)}.")
    for c in f.remedies:
        vs = [v for v in mine if v.comparison == c.name]
        if vs:
            details.append(f"{c.name}, {c.difference}{_metric(vs)}: " + count_text(vs, (
                (c.positive, _short(c.positive)), (c.negative, _short(c.negative)),
                (NO_DIFFERENCE, "no significant difference"))) + f" (of {len(vs)}; "
                f"{family_text(vs)}; {vs[0].test}).")
    details += _calibration_lines(f)
    table = remedies_table(f)
    if table is not None:
        details.append("The table gives analog accuracy in % of the test images (absolute, not "
                       "normalised): a hardware-aware model's own digital accuracy is another "
                       "denominator than the standard model's.")
    figures = tuple(fig for fig in f.figures if fig.kind.startswith("remedy-"))
    return Answer(REMEDIES_QUESTION, word, answer, tuple(details),
                  (table,) if table else (), figures,
                  family=family_text(survive) if survive else "")


def _metric(vs: list[Verdict]) -> str:
    """For HWA vs standard: the differences in absolute accuracy and normalised by the
    standard model's digital accuracy (the same denominator for both arms)."""
    if vs[0].metric != "accuracy":
        return ""
    parts = [f"{v.arch} {v.preset} {v.condition} {pp(v.diff)}"
             + (f" ({pp(v.diff / v.denominator)} of the standard model's digital accuracy)"
                if v.denominator else "") for v in vs[:4]]
    return (" on absolute accuracy — " + "; ".join(parts)
            + ("; …" if len(vs) > 4 else ""))


def _short(outcome: str) -> str:
    return outcome.removesuffix(SIGNIFICANT)


def _survives(harm: int, benefit: int, n: int, too_few: int) -> str:
    """Does the finding (BN is worse than no BN) survive? From the outcome counts."""
    if too_few == n:
        return "Undecided"
    if harm and benefit:
        return "Mixed"
    if harm:
        return ("Yes — BN is still worse" if 2 * harm >= n
                else "Partly — BN is still worse in some conditions")
    if benefit:
        return ("No — remedied BN is more robust than no BN" if 2 * benefit >= n
                else "Mostly not — no significant difference, remedied BN better in some "
                     "conditions")
    return "No — no significant difference once remedied"


def _calibration_lines(f: Findings) -> list[str]:
    """Calibration size and measured seconds per recalibration, per architecture."""
    if not any(split_variant(g.variant)[0] == BN_RECAL for g in f.groups):
        return []
    by_arch: dict[str, list[float]] = {}
    sizes = set()
    for model_id, entry in f.recalibration.items():
        dataset, arch = model_id.split("|")[:2]
        if dataset != f.dataset or not entry.get("count"):
            continue
        sizes.add(entry.get("calib_size"))
        by_arch.setdefault(arch, []).extend([entry["seconds"], entry["count"]])
    if not by_arch:
        return ["BN recalibrated: calibration size and time not recorded in this store."]
    cost = ", ".join(f"{arch} {sum(v[0::2]) / sum(v[1::2]):.3f} s"
                     for arch, v in sorted(by_arch.items()))
    size = ", ".join(str(s) for s in sorted(sizes))
    return [f"BN recalibration: {size} training images per chip and time (a fixed seeded "
            "sample, no augmentation, never test images), forwarded through the chip with its "
            f"noise; measured seconds per recalibration: {cost}."]


def remedies_table(f: Findings) -> Table | None:
    """Analog accuracy (absolute, %, mean ± 95% CI over the cells) of every variant, one row
    per (arch, preset, level), for the architectures with a remedy: absolute, because a
    hardware-aware model's own digital accuracy is another denominator than the standard
    model's."""
    remedied = {g.arch for g in f.groups
                if g.hwa or split_variant(g.variant)[0] == BN_RECAL}
    gs = [g for g in f.groups if g.arch in remedied]
    if not gs:
        return None
    variants = sorted({g.variant for g in gs}, key=variant_order)
    by: dict[tuple, dict[str, Group]] = {}
    for g in gs:
        by.setdefault((g.arch, g.preset, g.eta, g.t), {})[g.variant] = g
    rows = []
    for (arch, preset, eta, t), vs in sorted(by.items(), key=lambda kv: (
            kv[0][0], kv[0][1], none_first(kv[0][2]), none_first(kv[0][3]))):
        rows.append((arch, preset, condition_label(eta, t),
                     *(mean_ci(vs[v].accuracy) if v in vs else "—" for v in variants)))
    return Table(("arch", "preset", "condition", *(f"{v} (%)" for v in variants)),
                       tuple(rows))


