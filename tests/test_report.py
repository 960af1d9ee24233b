"""The report, from a hand-written results store in the real on-disk format (no training)."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import pytest
from scipy.stats import t as student_t

from hwsim.errors import ConfigError, HwsimError
from hwsim.report import (
    BN_BETTER,
    BN_WORSE,
    FOLD_HELPS,
    NO_DIFFERENCE,
    PAPER_RESULTS,
    build_report,
    condition_label,
    write_report,
)
from hwsim.store import STORE_NAME, ModelKey, Store

PNG = b"\x89PNG\r\n\x1a\n"
DIGITAL = {"bn": 0.92, "no-bn": 0.90}
BN_LAYERS = {"resnet44": 43, "vgg16": 13, "resnet20": 19}
ETAS = (0.0, 0.5)
TIMES = (1.0, 86400.0, 365 * 86400.0)
JITTER = (0.0, 0.01, -0.01, 0.005)  # per repeat
# (arch, variant) -> normalised-accuracy loss per unit of noise: BN loses more with more layers
LOSS = {("resnet44", "no-BN"): 0.1, ("resnet44", "BN kept"): 0.8, ("resnet44", "BN folded"): 0.4,
        ("vgg16", "no-BN"): 0.1, ("vgg16", "BN kept"): 0.3, ("vgg16", "BN folded"): 0.2,
        ("resnet20", "no-BN"): 0.1, ("resnet20", "BN kept"): 0.5, ("resnet20", "BN folded"): 0.3}
# Hand-chosen accuracies of the two constructed cases.
R44_ETA05 = {"no-BN": [0.81, 0.82, 0.80, 0.83], "BN kept": [0.30, 0.35, 0.32, 0.33],
             "BN folded": [0.60, 0.62, 0.58, 0.61]}
VGG_PCM_1S = {"no-BN": [0.85, 0.80, 0.88, 0.83], "BN kept": [0.86, 0.79, 0.84, 0.87],
              "BN folded": [0.85, 0.86, 0.80, 0.84]}
MODES = {"no-BN": ("no-bn", "none"), "BN kept": ("bn", "keep"), "BN folded": ("bn", "fold")}


def accuracy(arch, variant, preset, level, repeat) -> float:
    bn = MODES[variant][0]
    if arch == "resnet44" and preset == "gaussian" and level == 0.5:
        return R44_ETA05[variant][repeat]
    if arch == "vgg16" and preset == "pcm" and level == 1.0:
        return VGG_PCM_1S[variant][repeat]
    if preset == "gaussian":
        x = level
    else:  # pcm: loss grows with log10 of the time
        x = math.log10(level) / 10
    return DIGITAL[bn] * (1 - LOSS[(arch, variant)] * x) + (JITTER[repeat] if x else 0.0)


def make_store(run_dir: Path, archs=("resnet44", "vgg16", "resnet20"), repeats=4,
               meta=True) -> Path:
    with Store(run_dir / STORE_NAME) as store:
        for arch in archs:
            for bn in ("bn", "no-bn"):
                store.add_model(ModelKey("cifar10", arch, bn, 0), digital_accuracy=DIGITAL[bn],
                                n_test=200, full_test_accuracy=DIGITAL[bn] + 0.01,
                                bn_layers=BN_LAYERS[arch] if bn == "bn" else 0,
                                checkpoint=f"checkpoints/{arch}-{bn}.pt",
                                checkpoint_sha256="0" * 64, train_seconds=12.5)
            rows = []
            for variant, (bn, mode) in MODES.items():
                key = ModelKey("cifar10", arch, bn, 0)
                for r in range(repeats):
                    for eta in ETAS:
                        rows.append((key.cell(bn_mode=mode, preset="gaussian", eta=eta, t=None,
                                              repeat=r),
                                     accuracy(arch, variant, "gaussian", eta, r), 200, "aihwkit"))
                    for t in TIMES:
                        rows.append((key.cell(bn_mode=mode, preset="pcm", eta=None, t=t,
                                              repeat=r),
                                     accuracy(arch, variant, "pcm", t, r), 200, "aihwkit"))
            store.add_cells(rows)
        if meta:
            store.set_meta("study", {
                "name": "fixture", "description": "hand-made results",
                "datasets": {"cifar10": {"epochs": 2, "batch_size": 128, "lr": 0.1,
                                         "train_subset": 1000, "test_subset": 200}},
                "architectures": list(archs), "bn": ["bn", "no-bn"], "bn_modes": ["keep", "fold"],
                "presets": ["gaussian", "pcm"], "times": list(TIMES), "etas": list(ETAS),
                "repeats": repeats, "seeds": [0], "engine": "aihwkit"})
            store.set_meta("presets", {
                "gaussian": {"name": "gaussian", "description": "additive weight noise",
                             "source": "Fagbohungbe & Qian 2022", "noise_model": {"type": "none"},
                             "weight_noise": {"type": "additive", "eta": 0.1}},
                "pcm": {"name": "pcm", "description": "phase-change memory",
                        "source": "aihwkit", "noise_model": {"type": "pcm"},
                        "weight_noise": None}})
            store.set_meta("datasets", {"cifar10": {"n_test": 200, "test_total": 10000,
                                                    "source": "CIFAR-10 python"}})
            store.set_meta("versions", {"hwsim": "0.1.0", "aihwkit": "1.1.0", "torch": "2.10.0",
                                        "python": "3.12"})
            store.set_meta("timing", {"wall_seconds": 95.0})
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return make_store(tmp_path / "run")


@pytest.fixture
def report(run_dir):
    with Store.open_existing(run_dir) as store:
        return build_report(store)


def _md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| ")]


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


def test_every_cell_group_appears_in_the_tables(run_dir, report):
    paths = write_report(run_dir, ("md",))
    rows = _md_rows(paths[0].read_text())
    with Store(run_dir / STORE_NAME) as store:
        cells = store.cells()
    expected = {}
    for c in cells:
        variant = {"none": "no-BN", "keep": "BN kept", "fold": "BN folded"}[c["bn_mode"]]
        key = (c["arch"], variant, c["preset"], condition_label(c["eta"], c["t"]))
        expected.setdefault(key, []).append(c["accuracy"])
    assert len(expected) == 3 * 3 * (len(ETAS) + len(TIMES)) == len(report.groups)
    for (arch, variant, preset, cond), accs in expected.items():
        mean = 100 * sum(accs) / len(accs)
        match = [r for r in rows if r[:4] == [arch, variant, preset, cond]]
        assert len(match) == 1, (arch, variant, preset, cond)
        assert match[0][4] == str(len(accs))
        assert match[0][6].startswith(f"{mean:.1f} ± ")


def test_group_statistics_are_the_t_interval_of_the_mean(report):
    (g,) = [g for g in report.groups if (g.arch, g.variant, g.preset, g.eta)
            == ("resnet44", "BN kept", "gaussian", 0.5)]
    accs = R44_ETA05["BN kept"]
    mean = sum(accs) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 3)
    assert g.accuracy.n == 4
    assert g.accuracy.mean == pytest.approx(mean)
    assert g.accuracy.ci95 == pytest.approx(student_t.ppf(0.975, 3) * std / 2)
    assert g.normalised.mean == pytest.approx(mean / DIGITAL["bn"])
    assert g.digital == pytest.approx(DIGITAL["bn"])


def test_bn_clearly_worse_gives_worse_beyond_ci(report):
    v = _verdict(report, "resnet44", "gaussian", "η = 0.5", "BN kept vs no-BN")
    diff, low, high = _welch([a / 0.90 for a in R44_ETA05["no-BN"]],
                             [a / 0.92 for a in R44_ETA05["BN kept"]])
    assert (v.diff, v.low, v.high) == pytest.approx((diff, low, high))
    assert v.low > 0.4
    assert v.outcome == BN_WORSE
    fold = _verdict(report, "resnet44", "gaussian", "η = 0.5", "folding")
    assert fold.diff == pytest.approx((sum(R44_ETA05["BN folded"]) - sum(R44_ETA05["BN kept"]))
                                      / 4 / 0.92)
    assert fold.outcome == FOLD_HELPS


def test_overlapping_distributions_give_no_significant_difference(report):
    v = _verdict(report, "vgg16", "pcm", "t = 1s", "BN kept vs no-BN")
    diff, low, high = _welch([a / 0.90 for a in VGG_PCM_1S["no-BN"]],
                             [a / 0.92 for a in VGG_PCM_1S["BN kept"]])
    assert (v.diff, v.low, v.high) == pytest.approx((diff, low, high))
    assert low < 0 < high
    assert v.outcome == NO_DIFFERENCE
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
    v = _verdict(report, "resnet44", "gaussian", "average over η = 0, 0.5", "BN kept vs no-BN")
    no_bn = [(1 + a / 0.90) / 2 for a in R44_ETA05["no-BN"]]
    kept = [(1 + a / 0.92) / 2 for a in R44_ETA05["BN kept"]]
    assert (v.diff, v.low, v.high) == pytest.approx(_welch(no_bn, kept))
    assert v.outcome == BN_WORSE


def test_paper_table_cites_published_figures_only_where_the_paper_has_them(run_dir):
    text = write_report(run_dir, ("md",))[0].read_text()
    rows = {(r[1], r[2]): r for r in _md_rows(text) if len(r) == 10 and r[0] == "cifar10"}
    assert rows[("resnet44", "gaussian")][8:] == ["91.95", "41.32"]
    assert rows[("vgg16", "gaussian")][8:] == ["93.80", "10.75"]
    assert rows[("resnet20", "gaussian")][8:] == ["—", "—"]
    kept = (1 + sum(R44_ETA05["BN kept"]) / 4 / 0.92) / 2
    assert rows[("resnet44", "gaussian")][5] == f"{100 * kept:.1f}"
    assert "Fagbohungbe" in text and "may differ from this run's η levels" in text


def test_summary_counts_verdicts_and_finds_the_trend_with_bn_layers(report):
    lines = report.summaries["cifar10"]
    single = [v for v in report.verdicts if v.comparison == "BN kept vs no-BN"
              and not v.paper_metric]
    worse = sum(v.outcome == BN_WORSE for v in single)
    better = sum(v.outcome == BN_BETTER for v in single)
    same = sum(v.outcome == NO_DIFFERENCE for v in single)
    assert len(single) == 3 * (len(ETAS) + len(TIMES)) == worse + better + same
    assert (f"BN kept vs no-BN: of {len(single)} comparisons at single (preset, η/t) levels, "
            f"BN kept is worse in {worse}, BN kept is better in {better}, no significant "
            f"difference in {same}.") in lines
    # BN loss 0.8 (43 layers) > 0.5 (19) > 0.3 (13): the gap grows with the BN layers
    trend = [s for s in lines if s.startswith("BN kept gap vs number of BN layers (gaussian")]
    assert len(trend) == 1 and "ρ = +1.00 over 3 architectures" in trend[0]
    assert "grows with the number of BN layers" in trend[0]


def test_trend_needs_three_architectures(tmp_path):
    run = make_store(tmp_path / "two", archs=("resnet44", "vgg16"))
    with Store.open_existing(run) as store:
        lines = build_report(store).summaries["cifar10"]
    assert any("not enough architectures (2 < 3)" in s for s in lines)


def test_setup_states_test_subset_repeats_engine_and_versions(run_dir, report):
    text = "\n".join(report.setup)
    assert "evaluated on the first 200 of 10000 test images" in text
    assert "4 Monte-Carlo repeat(s) per cell" in text and "seed(s): 0" in text
    assert "Engine: aihwkit" in text
    assert "aihwkit 1.1.0" in text and "torch 2.10.0" in text
    assert "quick runs" in text and "This run is small" in text


def test_html_is_one_self_contained_file_with_embedded_pngs(run_dir, report, tmp_path):
    out = tmp_path / "html-only"
    paths = write_report(run_dir, ("html",), out)
    assert paths == [out / "report.html"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    text = paths[0].read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    # 1 time figure + 1 eta figure + 1 BN-layers figure
    assert len(srcs) == len(report.figures) == 3
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]).startswith(PNG)
    assert "<link" not in text and "http://" not in text and "https://" not in text
    for g in report.groups:  # every group is a table row here too
        assert (f"<tr><td>{g.arch}</td><td>{g.variant}</td><td>{g.preset}</td>"
                f"<td>{g.condition}</td><td>{g.accuracy.n}</td>") in text
    assert "BN kept is worse beyond the 95% CI" in text


def test_markdown_references_png_files_that_exist(run_dir):
    paths = write_report(run_dir)
    assert [p.name for p in paths] == ["report.html", "report.md"]
    md = paths[1].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3 and all(link.startswith("figures/") for link in links)
    for link in links:
        assert (run_dir / link).read_bytes().startswith(PNG)
    assert {p.name for p in (run_dir / "figures").iterdir()} == {Path(x).name for x in links}


def test_figures_have_one_series_per_arch_and_variant(report):
    (time_fig,) = [f for f in report.figures if f.kind == "time"]
    lines = [s for s in time_fig.series if s.kind == "line"]
    assert sorted(s.label for s in lines) == sorted(
        f"{a} {v}" for a in BN_LAYERS for v in MODES)
    assert all(s.x == TIMES for s in lines)
    (gap_fig,) = [f for f in report.figures if f.kind == "bn_layers"]
    kept = [s for s in gap_fig.series if s.label == "gaussian, average over η: no-BN − BN kept"]
    assert len(kept) == 1 and sorted(kept[0].x) == sorted(BN_LAYERS.values())


def test_bad_format_is_a_config_error_naming_the_choices(run_dir):
    with pytest.raises(ConfigError, match=r"'pdf'.*html, md"):
        write_report(run_dir, ("html", "pdf"))
    with pytest.raises(ConfigError, match="html, md"):
        write_report(run_dir, ())


def test_empty_store_and_missing_store_are_one_line_errors(tmp_path):
    Store(tmp_path / "empty" / STORE_NAME).close()
    with pytest.raises(HwsimError, match="holds no results") as err:
        write_report(tmp_path / "empty")
    assert "\n" not in str(err.value)
    with pytest.raises(HwsimError, match="no results store"):
        write_report(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_store_without_meta_still_reports(tmp_path):
    run = make_store(tmp_path / "partial", archs=("vgg16",), repeats=1, meta=False)
    paths = write_report(run)
    md = paths[1].read_text()
    assert "evaluated on 200 test images (size of the full test split not recorded)" in md
    assert "no study metadata" in md
    assert "not enough samples for a CI" in md  # one repeat: no CI
    # without the preset metadata the noise type is unknown: no published figure is cited
    rows = [r for r in _md_rows(md) if len(r) == 10 and r[1] == "vgg16"]
    assert rows and rows[0][8:] == ["—", "—"]
