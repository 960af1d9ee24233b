"""The written report: answers first, the forest plot, the appendix, the mapping sentence, the
notice for models that did not learn, and the Markdown/HTML files themselves."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path

import pytest
from report_store import BN_LAYERS, ETAS, MODES, TIMES, make_store

from hwsim.errors import ConfigError, HwsimError
from hwsim.report import (
    BN_BETTER,
    BN_WORSE,
    FOLD_HELPS,
    FOLD_HURTS,
    NO_DIFFERENCE,
    build_report,
    condition_label,
    report_document,
    write_report,
)
from hwsim.report.answers import mapping_sentences
from hwsim.report.render import Details, Figure, Heading, Notice
from hwsim.study.store import STORE_NAME, ModelKey, Store

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    return make_store(tmp_path / "run")


@pytest.fixture
def report(run_dir):
    return _build(run_dir)


def _build(run_dir):
    with Store.open_existing(run_dir) as store:
        return build_report(store)


def _md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| ")]


def _answer(report, dataset, prefix):
    (a,) = [a for a in report.answers[dataset] if a.question.startswith(prefix)]
    return a


# ------------------------------------------------------------------ reading order


def test_answers_come_first_then_setup_then_the_appendix(report):
    blocks = report_document(report).blocks
    headings = [b.text for b in blocks if isinstance(b, Heading)]
    assert headings[0] == "hwsim report: fixture"
    assert headings[1] == "Answers: cifar10"
    assert headings.index("Answers: cifar10") < headings.index("Setup") < headings.index(
        "Conventions") < headings.index("Appendix: tables")
    answers = headings[2:headings.index("Every comparison at a glance")]
    assert [q.split(" — ")[0] for q in answers] == ["Claim 1", "Claim 2", "Folding"]
    # the forest plot sits with the answers, before the setup; the verdict table is collapsed
    setup = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text == "Setup")
    kinds = [(i, b.spec.kind) for i, b in enumerate(blocks) if isinstance(b, Figure)]
    assert [k for i, k in kinds if i < setup] == ["bn_layers", "forest"]
    (verdicts,) = [b for b in blocks if isinstance(b, Details) and "verdicts" in b.summary]
    assert len(verdicts.blocks[0].rows) == len(report.verdicts)


def test_html_puts_answers_before_setup_and_collapses_the_verdict_table(run_dir):
    html = write_report(run_dir, ("html",))[0].read_text()
    at = {k: html.index(k) for k in ("<h2>Answers: cifar10</h2>", "Claim 1 — does BatchNorm",
                                     'alt="cifar10: every comparison with its 95% CI"',
                                     "<h2>Setup</h2>", "<summary>All ")}
    assert list(at.values()) == sorted(at.values())
    details = html[html.index("<details><summary>All "):]
    details = details[:details.index("</details>")]
    assert details.count("<tr>") == 1 + len(_build(run_dir).verdicts)  # header + rows


def test_forest_plot_has_every_verdict_coloured_by_its_outcome(report):
    (forest,) = [f for f in report.figures if f.kind == "forest"]
    points = [(forest.rows[p.row], panel.title.split("\n")[0], p.outcome)
              for panel in forest.panels for p in panel.points]
    assert len(points) == len(report.verdicts)
    assert [p.title.split("\n")[0] for p in forest.panels] == ["no BN − BN kept",
                                                                "BN folded − BN kept"]
    assert ("resnet44 · gaussian · η = 0.5", "no BN − BN kept", BN_WORSE) in points
    assert ("vgg16 · pcm · t = 1s", "no BN − BN kept", NO_DIFFERENCE) in points
    tones = {p.outcome: p.tone for panel in forest.panels for p in panel.points}
    assert tones[BN_WORSE] == "harm" and tones[FOLD_HELPS] == "benefit"


# ------------------------------------------------------------------ the answers


def test_claim_1_gives_the_verdict_counts_and_the_paper_metric_beside_the_published(report):
    a = _answer(report, "cifar10", "Claim 1")
    single = [v for v in report.verdicts if v.comparison == "BN kept vs no BN"
              and not v.paper_metric]
    worse, better, same = (sum(v.outcome == o for v in single)
                           for o in (BN_WORSE, BN_BETTER, NO_DIFFERENCE))
    assert worse + better + same == len(single) == 3 * (len(ETAS) + len(TIMES))
    assert a.short == "Yes"
    assert a.answer == (f"BN kept is worse than no BN (Holm-corrected p < 0.05) in {worse} of "
                        f"{len(single)} comparisons (architecture × preset × noise level), "
                        f"better in {better}, no significant difference in {same}. (1 trained "
                        "model per arm: compares two trained models, chip-level CI)")
    # levels where the two arms did not vary and did not differ (η = 0, t = 1 s) have no p
    tested = sum(v.p is not None for v in single)
    assert tested < len(single) and all(v.family_size == tested for v in single)
    assert a.family == f"family of {tested} tests, Holm-corrected (FWER 5%)"
    (table,) = a.tables
    assert table.headers == ("arch", "preset", "η levels", "no BN (%)", "BN kept (%)",
                             "BN folded (%)", "no BN − BN kept (pp)", "95% CI (pp)", "verdict",
                             "paper no BN (%)", "paper BN (%)")
    rows = {r[:2]: r for r in table.rows}
    assert set(rows) == {(arch, "gaussian") for arch in BN_LAYERS}
    (m,) = [p for p in report.paper_metrics if (p.arch, p.variant) == ("resnet44", "BN kept")]
    assert rows[("resnet44", "gaussian")][4] == f"{100 * m.value:.1f}"
    assert rows[("resnet44", "gaussian")][6:] == ("+27.6", rows[("resnet44", "gaussian")][7],
                                                  BN_WORSE, "91.95", "41.32")
    assert rows[("resnet20", "gaussian")][-2:] == ("—", "—")
    (published,) = [d for d in a.details if d.startswith("The paper's metric")]
    assert "no BN 91.95%, BN 41.32%" in published and "no BN 93.80%, BN 10.75%" in published


def test_claim_2_gives_the_trend_and_its_figure(report, tmp_path):
    a = _answer(report, "cifar10", "Claim 2")
    # three architectures: an exact permutation test cannot reach p < 0.05 (1/3! = 1/6)
    assert a.short == "Not testable (3 architectures)"
    assert a.answer.startswith("Under gaussian, average over η the gap no BN − BN kept rises "
                               "with the number of BN layers, 3 architectures: not testable")
    assert any(d.startswith("gaussian, average over η (headline condition): ρ = +1.00, "
                            "permutation p = 0.167 — vgg16 (13 BN layers)") for d in a.details)
    assert [f.kind for f in a.figures] == ["bn_layers"]
    two = _build(make_store(tmp_path / "two", archs=("resnet44", "vgg16")))
    a = _answer(two, "cifar10", "Claim 2")
    assert a.short == "Not answered"
    assert a.answer.startswith("Not enough architectures (2 < 3). The trend needs at least 3")


def test_a_model_that_did_not_learn_is_named_in_the_answers_and_marked_in_the_tables(tmp_path):
    run = make_store(tmp_path / "run", digital={("vgg16", "no-bn"): 0.10})
    report = _build(run)
    blocks = report_document(report).blocks
    notices = [b for b in blocks if isinstance(b, Notice) and b.lead == "Left out:"]
    assert len(notices) == 1
    text = notices[0].text
    assert ("vgg16 without BN (seed 0): digital accuracy 10.0%, below the 20.0% needed "
            "(2× chance for 10 classes)") in text
    first_answer = next(i for i, b in enumerate(blocks) if isinstance(b, Heading)
                        and b.text.startswith("Claim 1"))
    assert blocks.index(notices[0]) < first_answer  # above the answers, not in a footnote
    md = write_report(run, ("md",))[0].read_text()
    rows = _md_rows(md)
    verdict_rows = [r for r in rows if len(r) == 13 and r[0] == "cifar10"]
    assert verdict_rows and not [r for r in verdict_rows
                                 if r[1] == "vgg16" and r[4] == "no BN − BN kept"]
    marked = [r for r in rows if r[:2] == ["vgg16", "no BN (did not learn)"]]
    assert len(marked) == len(ETAS) + len(TIMES)
    assert ["vgg16", "no-bn", "0", "0", "10.0", "no: seed 0 at 10.0% < 20.0%"] in [
        r[:6] for r in rows]
    claim1 = _answer(report, "cifar10", "Claim 1")
    (vgg,) = [r for r in claim1.tables[0].rows if r[0] == "vgg16"]
    assert vgg[3] == "—" and vgg[4] != "—"  # no paper metric for no BN; its BN model learned
    assert vgg[6:9] == ("—", "—", "—")  # and no verdict


# ------------------------------------------------------------------ mapping (folding)


def test_folding_answer_shows_each_presets_mapping_and_whether_the_verdict_changes(tmp_path):
    run = make_store(tmp_path / "run", presets=("gaussian", "pcm", "pcm-column"))
    report = _build(run)
    a = _answer(report, "cifar10", "Folding")
    assert any(d.startswith("pcm (per-tile weight scaling, ω = 1): ") for d in a.details)
    assert any(d.startswith("pcm-column (per-column weight scaling, ω = 1): ")
               for d in a.details)
    assert any(d.startswith("gaussian (per-tile weight scaling, ω = 1; no effect here: exact "
                            "IO, no device model): ") for d in a.details)
    fold = {(v.preset, v.arch, v.t): v.outcome for v in report.verdicts
            if v.comparison == "folding" and not v.paper_metric and v.preset.startswith("pcm")}
    keys = {(arch, t) for _, arch, t in fold}
    changed = sum(fold[("pcm", *k)] != fold[("pcm-column", *k)] for k in keys)
    assert changed and {fold[("pcm-column", *k)] for k in keys} == {NO_DIFFERENCE}
    sentence = ("pcm (per-tile weight scaling, ω = 1) and pcm-column (per-column weight "
                "scaling, ω = 1) differ only in their mapping: the folding verdict changes in "
                f"{changed} of {len(keys)} matched comparisons.")
    assert sentence in a.details
    assert sentence in write_report(run, ("md",))[0].read_text()


def test_mapping_sentence_says_when_the_verdict_does_not_change(tmp_path):
    report = _build(make_store(tmp_path / "run", presets=("pcm", "pcm-column")))
    presets = {"pcm": {}, "pcm-column": {}}
    with Store.open_existing(tmp_path / "run") as store:
        presets = store.meta()["presets"]
    pcm = [v for v in report.verdicts if v.comparison == "folding" and v.preset == "pcm"]
    same = pcm + [dataclasses.replace(v, preset="pcm-column") for v in pcm]
    assert mapping_sentences(same, presets) == [
        "pcm (per-tile weight scaling, ω = 1) and pcm-column (per-column weight scaling, "
        f"ω = 1) differ only in their mapping: the folding verdict is the same in all "
        f"{len(pcm)} matched comparisons."]
    other = dict(presets["pcm-column"], noise_model={"type": "reram-cmo"})
    assert mapping_sentences(same, {"pcm": presets["pcm"], "pcm-column": other}) == []


# ------------------------------------------------------------------ variants


def test_a_new_bn_mode_shows_in_tables_and_figures_without_code(tmp_path):
    run = make_store(tmp_path / "run", archs=("resnet20",))
    with Store(run / STORE_NAME) as store:
        key = ModelKey("cifar10", "resnet20", "bn", 0)
        store.add_cells([(key.cell(bn_mode="recal", preset="pcm", eta=None, t=t, repeat=r),
                          0.9 - 0.01 * r, 200, "aihwkit") for t in TIMES for r in range(4)])
    report = _build(run)
    recal = [g for g in report.groups if g.variant == "BN recalibrated"]
    assert [g.t for g in recal] == list(TIMES)
    (time_fig,) = [f for f in report.figures if f.kind == "time"]
    assert "resnet20 BN recalibrated" in [s.label for s in time_fig.series]
    md = write_report(run, ("md",))[0].read_text()
    assert "| resnet20 | BN recalibrated | pcm | t = 1y | 4 |" in md


# ------------------------------------------------------------------ the files


def test_every_cell_group_appears_in_the_tables(run_dir, report):
    rows = _md_rows(write_report(run_dir, ("md",))[0].read_text())
    with Store(run_dir / STORE_NAME) as store:
        cells = store.cells()
    expected = {}
    for c in cells:
        variant = {"none": "no BN", "keep": "BN kept", "fold": "BN folded"}[c["bn_mode"]]
        key = (c["arch"], variant, c["preset"], condition_label(c["eta"], c["t"]))
        expected.setdefault(key, []).append(c["accuracy"])
    assert len(expected) == 3 * 3 * (len(ETAS) + len(TIMES)) == len(report.groups)
    for (arch, variant, preset, cond), accs in expected.items():
        mean = 100 * sum(accs) / len(accs)
        match = [r for r in rows if r[:4] == [arch, variant, preset, cond]]
        assert len(match) == 1, (arch, variant, preset, cond)
        assert match[0][4] == str(len(accs))
        assert match[0][6].startswith(f"{mean:.1f} ± ")


def test_paper_table_cites_published_figures_only_where_the_paper_has_them(run_dir):
    text = write_report(run_dir, ("md",))[0].read_text()
    rows = {(r[0], r[1]): r for r in _md_rows(text) if len(r) == 11}
    assert rows[("resnet44", "gaussian")][9:] == ["91.95", "41.32"]
    assert rows[("vgg16", "gaussian")][9:] == ["93.80", "10.75"]
    assert rows[("resnet20", "gaussian")][9:] == ["—", "—"]
    assert "Fagbohungbe" in text and "may differ from this run's η levels" in text


def test_setup_states_test_subset_repeats_engine_and_versions(report):
    text = "\n".join(report.setup)
    assert "evaluated on the first 200 of 10000 test images" in text
    assert "4 Monte-Carlo repeat(s) per cell" in text and "seed(s): 0" in text
    assert "Engine: aihwkit" in text
    assert "aihwkit 1.1.0" in text and "torch 2.10.0" in text
    assert "quick runs" in text and "This run is small" in text
    assert report.small_run == ["cifar10 uses 200 of 10000 test images",
                                "cifar10 models trained 2 epoch(s)", "4 repeat(s) per cell"]


def test_html_is_one_self_contained_file_with_embedded_pngs(run_dir, report, tmp_path):
    out = tmp_path / "html-only"
    paths = write_report(run_dir, ("html",), out)
    assert paths == [out / "report.html"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    text = paths[0].read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    # forest + BN layers + accuracy vs time (pcm) + normalised vs eta (gaussian)
    assert len(srcs) == len(report.figures) == 4
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1]).startswith(PNG) for s in srcs)
    assert "<link" not in text and "http://" not in text and "https://" not in text
    for g in report.groups:  # every group is a table row here too
        assert (f"<tr><td>{g.arch}</td><td>{g.variant}</td><td>{g.preset}</td>"
                f"<td>{g.condition}</td><td>{g.accuracy.n}</td>") in text


def test_markdown_references_png_files_that_exist(run_dir):
    paths = write_report(run_dir)
    assert [p.name for p in paths] == ["report.html", "report.md"]
    md = paths[1].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 and all(link.startswith("figures/") for link in links)
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
    kept = [s for s in gap_fig.series if s.label == "gaussian, average over η: no BN − BN kept"]
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
    md = write_report(run)[1].read_text()
    assert "evaluated on 200 test images (size of the full test split not recorded)" in md
    assert "no study metadata" in md
    assert "Undecided" in md and "not enough samples for a CI" in md  # one repeat: no CI
    # without the preset metadata the noise type is unknown: no published figure is cited
    assert "| arch | preset | η levels | no BN (%) | BN kept (%) | BN folded (%) | no BN − BN " \
           "kept (pp) | 95% CI (pp) | verdict |\n" in md


def test_folding_hurts_is_counted(tmp_path):
    report = _build(make_store(tmp_path / "run"))
    a = _answer(report, "cifar10", "Folding")
    helps = sum(v.outcome == FOLD_HELPS for v in report.verdicts
                if v.comparison == "folding" and not v.paper_metric)
    assert a.short == "Yes"
    assert a.answer.startswith(f"BN folded is more robust than BN kept (Holm-corrected p < "
                               f"0.05) in {helps} of 15 comparisons, less robust in 0")
    assert FOLD_HURTS not in {v.outcome for v in report.verdicts}


def test_the_report_needs_no_simulator(run_dir):
    """The report works from the store alone: aihwkit and the engines are never imported."""
    import subprocess
    import sys

    code = ("import sys; from hwsim.report import write_report; "
            f"write_report({str(run_dir)!r}, ('html',)); "
            "bad = [m for m in sys.modules if m.startswith(('aihwkit', 'hwsim.engine'))]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.html").is_file()
