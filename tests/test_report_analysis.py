"""The report's numbers (groups, verdicts, paper metric, trends, models that did not learn),
from a hand-written results store (tests/report_store.py)."""

from __future__ import annotations

import math

import pytest
from report_store import BN_LAYERS, DIGITAL, ETAS, MODES, R44_ETA05, TIMES, VGG_PCM_1S, make_store
from scipy.stats import t as student_t

from hwsim.report import (
    BN_WORSE,
    FOLD_HELPS,
    NO_DIFFERENCE,
    PAPER_RESULTS,
    build_report,
    variant_of,
)
from hwsim.stats import LEARNED_FACTOR
from hwsim.study.store import Store


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_store(tmp_path_factory.mktemp("report") / "run")
    with Store.open_existing(run) as store:
        return build_report(store)


def _build(run_dir):
    with Store.open_existing(run_dir) as store:
        return build_report(store)


def _verdict(report, arch, preset, condition, comparison):
    (v,) = [v for v in report.verdicts if (v.arch, v.preset, v.condition, v.comparison)
            == (arch, preset, condition, comparison)]
    return v


def _welch(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = student_t.ppf(0.975, dof) * math.sqrt(va + vb)
    return ma - mb, ma - mb - half, ma - mb + half


def test_variant_labels_cover_every_bn_mode():
    assert [variant_of("no-bn", "none"), variant_of("bn", "keep"), variant_of("bn", "fold"),
            variant_of("bn", "recal")] == ["no BN", "BN kept", "BN folded", "BN recalibrated"]
    assert variant_of("bn", "future") == "BN future"


def test_group_statistics_are_the_t_interval_of_the_mean(report):
    (g,) = [g for g in report.groups if (g.arch, g.variant, g.preset, g.eta)
            == ("resnet44", "BN kept", "gaussian", 0.5)]
    accs = R44_ETA05["BN kept"]
    mean = sum(accs) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 3)
    assert g.accuracy.n == 4 and g.learned
    assert g.accuracy.mean == pytest.approx(mean)
    assert g.accuracy.ci95 == pytest.approx(student_t.ppf(0.975, 3) * std / 2)
    assert g.normalised.mean == pytest.approx(mean / DIGITAL["bn"])
    assert g.digital == pytest.approx(DIGITAL["bn"])
    assert len(report.groups) == 3 * len(MODES) * (len(ETAS) + len(TIMES))


def test_bn_clearly_worse_gives_worse_beyond_ci(report):
    v = _verdict(report, "resnet44", "gaussian", "η = 0.5", "BN kept vs no BN")
    diff, low, high = _welch([a / 0.90 for a in R44_ETA05["no BN"]],
                             [a / 0.92 for a in R44_ETA05["BN kept"]])
    assert (v.diff, v.low, v.high) == pytest.approx((diff, low, high))
    assert v.low > 0.4
    assert v.outcome == BN_WORSE and v.tone == "harm" and v.difference == "no BN − BN kept"
    fold = _verdict(report, "resnet44", "gaussian", "η = 0.5", "folding")
    assert fold.diff == pytest.approx((sum(R44_ETA05["BN folded"]) - sum(R44_ETA05["BN kept"]))
                                      / 4 / 0.92)
    assert fold.outcome == FOLD_HELPS and fold.tone == "benefit"


def test_overlapping_distributions_give_no_significant_difference(report):
    v = _verdict(report, "vgg16", "pcm", "t = 1s", "BN kept vs no BN")
    diff, low, high = _welch([a / 0.90 for a in VGG_PCM_1S["no BN"]],
                             [a / 0.92 for a in VGG_PCM_1S["BN kept"]])
    assert (v.diff, v.low, v.high) == pytest.approx((diff, low, high))
    assert low < 0 < high
    assert v.outcome == NO_DIFFERENCE and v.tone == "none"
    assert _verdict(report, "vgg16", "pcm", "t = 1s", "folding").outcome == NO_DIFFERENCE


def test_paper_metric_is_the_mean_over_eta_of_mean_normalised_accuracy(report):
    (m,) = [p for p in report.paper_metrics if (p.arch, p.variant, p.preset)
            == ("resnet44", "BN kept", "gaussian")]
    at_0 = 0.92 / 0.92
    at_05 = sum(R44_ETA05["BN kept"]) / 4 / 0.92
    assert m.etas == ETAS
    assert m.value == pytest.approx((at_0 + at_05) / 2)
    assert m.paper == PAPER_RESULTS[("cifar10", "resnet44", "additive")]["BN kept"] == 41.32
    # its verdict: one sample per repeat, averaged over the eta levels
    v = _verdict(report, "resnet44", "gaussian", "average over η = 0, 0.5", "BN kept vs no BN")
    no_bn = [(1 + a / 0.90) / 2 for a in R44_ETA05["no BN"]]
    kept = [(1 + a / 0.92) / 2 for a in R44_ETA05["BN kept"]]
    assert (v.diff, v.low, v.high) == pytest.approx(_welch(no_bn, kept))
    assert v.outcome == BN_WORSE


def test_trend_of_the_bn_gap_with_bn_layers(report):
    (kept,) = [t for t in report.trends if t.condition == "gaussian, average over η"
               and t.variant == "BN kept"]
    # BN loss 0.8 (43 layers) > 0.5 (19) > 0.3 (13): the gap grows with the BN layers
    assert kept.rho == pytest.approx(1.0) and kept.direction == "grows"
    assert sorted(p.bn_layers for p in kept.points) == sorted(BN_LAYERS.values())
    assert {t.condition for t in report.trends} == {"gaussian, average over η", "pcm at t = 1y"}


def test_trend_needs_three_architectures(tmp_path):
    report = _build(make_store(tmp_path / "two", archs=("resnet44", "vgg16")))
    assert report.trends and all(t.rho is None for t in report.trends)
    assert all(t.reason == "not enough architectures (2 < 3)" for t in report.trends)


def test_a_model_at_chance_is_left_out_of_every_analysis(tmp_path):
    """vgg16 without BN at 10% (chance for 10 classes): normalised accuracy 100% everywhere.
    It must not make 'BN kept is worse' verdicts, paper metrics or a trend point."""
    report = _build(make_store(tmp_path / "run", digital={("vgg16", "no-bn"): 0.10}))
    (u,) = report.unlearned
    assert (u.arch, u.bn, u.seed, u.accuracy) == ("vgg16", "no-bn", 0, 0.10)
    assert u.threshold == pytest.approx(LEARNED_FACTOR / 10) and u.num_classes == 10
    stuck = [g for g in report.groups if g.arch == "vgg16" and g.variant == "no BN"]
    assert stuck and all(not g.learned for g in stuck)
    assert all(g.normalised.mean == pytest.approx(1.0) for g in stuck)
    # no comparison against it; its BN model is still compared with itself folded
    assert not [v for v in report.verdicts if v.arch == "vgg16" and v.comparison
                == "BN kept vs no BN"]
    assert [v for v in report.verdicts if v.arch == "vgg16" and v.comparison == "folding"]
    assert not [p for p in report.paper_metrics if p.arch == "vgg16" and p.variant == "no BN"]
    assert all("vgg16" not in {p.arch for p in t.points} for t in report.trends)
    assert all(t.rho is None for t in report.trends)  # 2 architectures left
    assert all("vgg16 no BN" not in s.label for f in report.figures for s in f.series)
    (forest,) = [f for f in report.figures if f.kind == "forest"]
    assert not [r for r in _claim1_rows(forest) if r.startswith("vgg16")]


def _claim1_rows(forest) -> set[str]:
    (panel,) = [p for p in forest.panels if p.title.startswith("no BN − BN kept")]
    return {forest.rows[p.row] for p in panel.points}


def test_the_study_sets_the_learned_threshold(tmp_path):
    # 35% is above 2x chance (20%) but below 4x chance (40%)
    kw = dict(digital={("vgg16", "no-bn"): 0.35})
    assert _build(make_store(tmp_path / "default", **kw)).unlearned == []
    strict = _build(make_store(tmp_path / "strict", learned_factor=4.0, **kw))
    assert [(u.arch, u.threshold) for u in strict.unlearned] == [("vgg16", pytest.approx(0.4))]
