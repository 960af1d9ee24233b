"""The statistics of the verdicts on data whose truth we know: simulated studies with no true
difference (each family's headline must be wrong in at most 5% of them) and with a planted
effect (the power), the paired design, claim 2's permutation test, the HWA denominator and
the one-seed notice. The simulations call the analysis directly on synthetic cell rows; the
last tests go through build_report on a real store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from report_store import make_store

from hwsim.report import build_report, report_document
from hwsim.report.analysis import NO_DIFFERENCE, build_groups
from hwsim.report.answer_base import Findings
from hwsim.report.answers import answer_bn_hurts, answer_bn_layers
from hwsim.report.render import Heading, Notice
from hwsim.report.trends import bn_trends
from hwsim.report.verdicts import (
    COMPARISONS,
    ONE_MODEL,
    RECALIBRATION,
    build_verdicts,
    hwa_comparison,
)
from hwsim.stats import welch_test
from hwsim.study.store import STORE_NAME, ModelKey, Store

N_NULL = 500
ALPHA = 0.05
# the false-verdict rate may exceed 5% by Monte-Carlo error only (2 standard errors)
MAX_FALSE = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / N_NULL)
SEED_SD, CHIP_SD, NOISE_SD = 0.03, 0.01, 0.003  # trained model, chip, variant on a chip
TIMES = (1.0, 3600.0, 86400.0)
LAYERS = {"a1": 3, "a2": 19, "a3": 31, "a4": 43, "a5": 55}
MODES = (("no-bn", "none"), ("bn", "keep"), ("bn", "fold"), ("bn", "recal"))


def simulate(rng, archs=("a1", "a2"), seeds=3, repeats=5, effect=None, times=TIMES):
    """Cell rows of one dataset: normalised accuracy = 0.8 + the variant's ``effect`` (per
    (arch, bn_mode), default 0) + a trained model's offset (sd 3 pp, shared by its BN modes
    and levels) + a chip's offset (sd 1 pp, shared by the BN modes of one model: cells share
    chip seeds) + a little noise per cell (0.3 pp). Digital accuracy is 1: accuracy and
    normalised accuracy coincide."""
    effect = effect or {}
    cells = []
    for arch in archs:
        for bn in ("bn", "no-bn"):
            for seed in range(seeds):
                model = rng.normal(0, SEED_SD)
                for t in times:
                    chips = rng.normal(0, CHIP_SD, repeats)
                    for b, mode in MODES:
                        if b != bn:
                            continue
                        base = 0.8 + effect.get((arch, mode), 0.0) + model
                        acc = base + chips + rng.normal(0, NOISE_SD, repeats)
                        cells += [{"dataset": "d", "arch": arch, "bn": bn, "seed": seed,
                                   "hwa": 0.0, "bn_mode": mode, "preset": "pcm", "eta": None,
                                   "t": t, "repeat": r, "accuracy": float(acc[r])}
                                  for r in range(repeats)]
    digital = {("d", arch, bn, s, 0.0): 1.0 for arch in archs for bn in ("bn", "no-bn")
               for s in range(seeds)}
    return build_groups(cells, digital)


def _families(groups):
    return build_verdicts(groups, [*COMPARISONS, RECALIBRATION])


def _claims_an_effect(verdicts, comparison) -> bool:
    """The family's headline claims a difference: any of its verdicts is significant."""
    return any(v.outcome != NO_DIFFERENCE for v in verdicts if v.comparison == comparison)


def _claim_1_word(groups, verdicts) -> str:
    return answer_bn_hurts(Findings("d", verdicts, [], [], {}, groups=groups)).short


def test_under_the_null_each_familys_headline_is_wrong_in_at_most_5_percent():
    """Measured over 500 studies (2 architectures x 3 times, 3 seeds x 5 chips): claim 1
    1.2%, folding 3.0%, recalibration 4.8%."""
    rng = np.random.default_rng(18)
    wrong = {"BN kept vs no BN": 0, "folding": 0, "recalibration": 0, "claim 1 word": 0}
    for _ in range(N_NULL):
        groups = simulate(rng)
        verdicts = _families(groups)
        for name in ("BN kept vs no BN", "folding", "recalibration"):
            wrong[name] += _claims_an_effect(verdicts, name)
        wrong["claim 1 word"] += _claim_1_word(groups, verdicts) != "No significant difference"
    rates = {k: v / N_NULL for k, v in wrong.items()}
    assert all(r <= MAX_FALSE for r in rates.values()), rates
    assert wrong["claim 1 word"] == wrong["BN kept vs no BN"]


def test_pooling_chips_as_independent_would_be_wrong_far_more_often():
    """What the old analysis did (Welch over seeds x repeats, uncorrected): under the same
    null, seed-to-seed spread makes it call BN worse or better most of the time."""
    rng = np.random.default_rng(7)
    n, wrong = 200, 0
    for _ in range(n):
        groups = {(g.arch, g.variant, g.t): g for g in simulate(rng)}
        pooled = [welch_test([s[2] for s in groups[(a, "no BN", t)].samples],
                             [s[2] for s in groups[(a, "BN kept", t)].samples]).p
                  for a in ("a1", "a2") for t in TIMES]
        wrong += min(pooled) < ALPHA
    assert wrong / n > 0.3


def test_power_of_claim_1_with_a_known_harm():
    """BN kept loses 10 pp on every architecture and time, seed sd 3 pp: with 3 seeds per
    arm the Holm-corrected family (6 tests) finds it in at least 40% of the studies, with 5
    seeds in at least 95% (measured: 0.52 and 0.985)."""
    rng = np.random.default_rng(3)
    harm = {(a, m): -0.10 for a in ("a1", "a2") for m in ("keep", "fold", "recal")}
    power = {}
    for seeds in (3, 5):
        hits = 0
        for _ in range(200):
            verdicts = _families(simulate(rng, seeds=seeds, effect=harm))
            hits += any(v.tone == "harm" for v in verdicts if v.comparison == "BN kept vs no BN")
        power[seeds] = hits / 200
    assert power[3] >= 0.4 and power[5] >= 0.95, power


def test_a_small_recalibration_gain_is_found_by_the_paired_analysis():
    """+1 pp from recalibration, chip sd 2 pp shared by both variants, 5 chips of one model:
    the paired test finds it nearly always, an unpaired Welch test rarely."""
    rng = np.random.default_rng(11)
    paired = unpaired = 0
    n = 200
    for _ in range(n):
        chips = rng.normal(0, 0.02, 5)
        keep = 0.8 + chips + rng.normal(0, NOISE_SD, 5)
        recal = 0.81 + chips + rng.normal(0, NOISE_SD, 5)
        cells = [{"dataset": "d", "arch": "a1", "bn": "bn", "seed": 0, "hwa": 0.0,
                  "bn_mode": mode, "preset": "pcm", "eta": None, "t": 1.0, "repeat": r,
                  "accuracy": float(accs[r])}
                 for mode, accs in (("keep", keep), ("recal", recal)) for r in range(5)]
        groups = build_groups(cells, {("d", "a1", "bn", 0, 0.0): 1.0})
        (v,) = build_verdicts(groups, [RECALIBRATION])
        assert v.test.startswith("paired t over 5 chips") and v.family_size == 1
        paired += v.tone == "benefit"
        unpaired += welch_test(recal, keep).p < ALPHA
    assert paired / n >= 0.95 and unpaired / n <= 0.3, (paired, unpaired)


def _claim_2(groups, archs):
    layers = {("d", a): LAYERS[a] for a in archs}
    trends = bn_trends("d", groups, layers)
    return answer_bn_layers(Findings("d", [], [], trends, {}, groups=groups)), trends


def test_claim_2_under_a_constant_harm_says_yes_in_at_most_5_percent():
    """BN kept harms every architecture by 5 pp, no trend: "Yes" is a false claim (measured:
    0.6% of 500 studies; the permutation test alone would say so in 1/24 = 4.2%)."""
    rng = np.random.default_rng(5)
    archs = ("a1", "a2", "a3", "a4")
    harm = {(a, "keep"): -0.05 for a in archs}
    yes = sum(_claim_2(simulate(rng, archs=archs, effect=harm, times=(1.0,)), archs)[0].short
              == "Yes" for _ in range(N_NULL))
    assert yes / N_NULL <= MAX_FALSE


def test_power_of_claim_2_with_a_growing_harm():
    """The harm grows 4, 8, ... 20 pp over five architectures (3 seeds, seed sd 3 pp): "Yes"
    in at least 50% of the studies (measured: 0.79)."""
    rng = np.random.default_rng(9)
    archs = tuple(LAYERS)
    harm = {(a, "keep"): -0.04 * (i + 1) for i, a in enumerate(archs)}
    n = 100
    yes = sum(_claim_2(simulate(rng, archs=archs, effect=harm, times=(1.0,)), archs)[0].short
              == "Yes" for _ in range(n))
    assert yes / n >= 0.5


def test_claim_2_is_never_yes_when_no_gap_is_positive():
    """BN kept is better than no BN everywhere, by less the deeper the model: the gap rises
    perfectly with the BN layers (rho = +1, p = 1/24), but nothing is harmed."""
    rng = np.random.default_rng(1)
    archs = ("a1", "a2", "a3", "a4")
    help_ = {(a, "keep"): 0.2 - 0.04 * i for i, a in enumerate(archs)}
    for _ in range(20):
        answer, trends = _claim_2(simulate(rng, archs=archs, effect=help_, times=(1.0,)), archs)
        (t,) = [t for t in trends if t.variant == "BN kept"]
        assert all(p.diff <= 0 for p in t.points)
        assert answer.short != "Yes" and answer.short.startswith("No")


def test_claim_2_is_not_testable_with_three_architectures():
    rng = np.random.default_rng(2)
    archs = ("a1", "a2", "a3")
    harm = {(a, "keep"): -0.1 * (i + 1) for i, a in enumerate(archs)}
    answer, trends = _claim_2(simulate(rng, archs=archs, effect=harm, times=(1.0,)), archs)
    (t,) = [t for t in trends if t.variant == "BN kept"]
    assert t.rho == pytest.approx(1.0) and t.p == pytest.approx(1 / 6)
    assert answer.short == "Not testable (3 architectures)"
    assert "rises with the number of BN layers, 3 architectures: not testable" in answer.answer


# ------------------------------------------------------------------ through the real store


def _store(run: Path, models: dict, cells: list, study: dict | None = None) -> Path:
    """models: ModelKey -> digital accuracy; cells: (ModelKey, bn_mode, t, repeat, accuracy)."""
    with Store(run / STORE_NAME) as store:
        for key, digital in models.items():
            store.add_model(key, digital_accuracy=digital, n_test=450, full_test_accuracy=None,
                            bn_layers=3 if key.bn == "bn" else 0, checkpoint="c.pt",
                            checkpoint_sha256="0" * 64, train_seconds=1.0)
        store.add_cells([(k.cell(bn_mode=mode, preset="pcm", eta=None, t=t, repeat=r), acc,
                          450, "fast") for k, mode, t, r, acc in cells])
        if study:
            store.set_meta("study", study)
    return run


def test_hwa_is_compared_on_absolute_accuracy_not_on_its_own_denominator(tmp_path):
    """Standard: 95% digital -> 80.0% analog; HWA: 85% digital -> 78.1% analog. Normalised by
    each model's own digital accuracy HWA would look better (91.9% vs 84.2%); on absolute
    accuracy it is not."""
    rng = np.random.default_rng(4)
    std = [ModelKey("digits", "cnn", "no-bn", s) for s in range(3)]
    hwa = [ModelKey("digits", "cnn", "no-bn", s, hwa=0.06) for s in range(3)]
    models = {**{k: 0.95 for k in std}, **{k: 0.85 for k in hwa}}
    cells = [(k, "none", 1.0, r, mean + rng.normal(0, 0.002))
             for keys, mean in ((std, 0.800), (hwa, 0.781)) for k in keys for r in range(5)]
    run = _store(tmp_path / "run", models, cells, {"name": "hwa", "hwa_clip": 2.0})
    with Store.open_existing(run) as store:
        report = build_report(store)
    name = hwa_comparison("no BN", 0.06, 2.0).name
    assert name == "HWA η 0.06, clip ±2σ vs standard training (no BN)"
    (v,) = [v for v in report.verdicts if v.comparison == name]
    assert v.metric == "accuracy" and v.diff == pytest.approx(-0.019, abs=0.003)
    assert v.outcome in ("HWA hurts", NO_DIFFERENCE) and v.outcome != "HWA helps"
    assert v.denominator == pytest.approx(0.95)
    assert v.test.startswith("Welch t over trained models (3 / 3 seeds")
    (answer,) = [a for a in report.answers["digits"] if a.question.startswith("Remedies")]
    (line,) = [d for d in answer.details if d.startswith(name)]
    assert "on absolute accuracy" in line and "of the standard model's digital accuracy" in line


def test_one_seed_is_said_above_the_first_verdict(tmp_path):
    with Store.open_existing(make_store(tmp_path / "run")) as store:
        report = build_report(store)
    blocks = report_document(report).blocks
    (notice,) = [b for b in blocks if isinstance(b, Notice)
                 and b.lead == "One trained model per arm:"]
    first = next(i for i, b in enumerate(blocks) if isinstance(b, Heading)
                 and b.text.startswith("Claim 1"))
    assert blocks.index(notice) < first and "cannot speak for BN" in notice.text
    claim = [v for v in report.verdicts if v.comparison == "BN kept vs no BN"]
    assert claim and all(v.chip_level and ONE_MODEL in v.test for v in claim)
    # the same trained model: paired over its chips, not a one-model-per-arm fallback
    assert all(not v.chip_level and v.test.startswith("paired t over")
               for v in report.verdicts if v.comparison == "folding")


def test_several_seeds_test_over_trained_models_and_say_nothing_of_one_seed(tmp_path):
    rng = np.random.default_rng(6)
    keys = {bn: [ModelKey("digits", "cnn", bn, s) for s in range(3)] for bn in ("bn", "no-bn")}
    models = {k: 0.95 for ks in keys.values() for k in ks}
    cells = [(k, mode, 1.0, r, 0.8 + rng.normal(0, 0.01))
             for bn, mode in (("no-bn", "none"), ("bn", "keep"), ("bn", "fold"))
             for k in keys[bn] for r in range(4)]
    with Store.open_existing(_store(tmp_path / "run", models, cells)) as store:
        report = build_report(store)
    (claim,) = [v for v in report.verdicts if v.comparison == "BN kept vs no BN"]
    assert claim.n == (3, 3) and not claim.chip_level
    (fold,) = [v for v in report.verdicts if v.comparison == "folding"]
    assert fold.test.startswith("paired t over 3 trained models") and fold.n == (3, 3)
    assert not [b for b in report_document(report).blocks if isinstance(b, Notice)
                and b.lead == "One trained model per arm:"]
