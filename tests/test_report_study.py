"""The report of real (tiny) digits studies: it describes exactly the study's current grid."""

from __future__ import annotations

import shutil

import pytest

from hwsim.report import build_report, write_report
from hwsim.study import load_study, plan_study, run_study, status_from_run_dir
from hwsim.study.store import STORE_NAME, Store

STUDY = """\
name: {name}
datasets:
  - name: digits
    epochs: 3
    batch_size: 32
    test_subset: 150
architectures: [cnn]
bn: {bn}
bn_modes: {bn_modes}
presets: {presets}
times: {times}
etas: {etas}
repeats: {repeats}
engine: fast
"""
WIDE = dict(name="wide", bn="[bn, no-bn]", bn_modes="[keep, fold]", presets="[pcm, gaussian]",
            times="[1s, 1d]", etas="[0.0, 0.5]", repeats=3)
# fewer BN variants, presets, times, etas and repeats: a subset of WIDE's grid
NARROW = dict(WIDE, name="narrow", bn="[bn]", presets="[gaussian]", etas="[0.5]", repeats=2)


def write_study(folder, **fields):
    path = folder / f"{fields['name']}.yaml"
    path.write_text(STUDY.format(**fields))
    return path


def quiet_run(study_file, run_dir):
    return run_study(load_study(study_file), run_dir, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wide")
    run = quiet_run(write_study(tmp, **WIDE), tmp / "run")
    assert run.computed_cells == 2 * 2 * 2 * 3 + 2 * 2 * 3  # BN: keep+fold; no-BN: none
    return run


def test_a_narrowed_study_reports_only_its_grid(wide_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(wide_run.run_dir, run_dir)
    narrow_file = write_study(tmp_path, **NARROW)
    again = quiet_run(narrow_file, run_dir)
    assert again.computed_cells == 0 and again.trained == 0  # all in the store already

    with Store(run_dir / STORE_NAME) as store:
        assert len(store.cells(current_only=False)) == 36  # the old cells stay in the file
        report = build_report(store)
    expected = {(v, "gaussian", 0.5, None) for v in ("BN kept", "BN folded")}
    assert {(g.variant, g.preset, g.eta, g.t) for g in report.groups} == expected
    assert all(g.accuracy.n == 2 for g in report.groups)  # repeats 0 and 1, not 2
    assert [(m["arch"], m["bn"]) for m in report.models] == [("cnn", "bn")]
    assert {(v.comparison, v.preset, v.eta, v.t) for v in report.verdicts} <= {
        ("folding", "gaussian", 0.5, None), ("folding", "gaussian", None, None)}
    md = write_report(run_dir, ("md",))[0].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| cnn |")]
    assert rows and not [r for r in rows if "no-bn" in r or "no BN" in r or "pcm" in r
                         or "η = 0 " in r]
    assert "pcm" not in md

    # status describes the same grid: one model, 2 variants x 1 eta x 2 repeats
    study, stages = status_from_run_dir(run_dir)
    assert study.name == "narrow"
    assert [(s.name, s.done, s.total) for s in stages] == [("train", 1, 1),
                                                          ("infer gaussian", 4, 4)]
    assert sum(g.accuracy.n for g in report.groups) == sum(s.total for s in stages[1:])


def test_widening_again_brings_the_old_cells_back_without_computing(wide_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(wide_run.run_dir, run_dir)
    quiet_run(write_study(tmp_path, **NARROW), run_dir)
    back = quiet_run(write_study(tmp_path, **WIDE), run_dir)
    assert back.computed_cells == 0
    with Store(run_dir / STORE_NAME) as store:
        assert len(store.cells()) == 36 and len(store.models()) == 2


def test_a_store_without_a_recorded_grid_reports_all_current_cells(wide_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(wide_run.run_dir, run_dir)
    quiet_run(write_study(tmp_path, **NARROW), run_dir)
    with Store(run_dir / STORE_NAME) as store:  # as written by hwsim before grids existed
        store._db.execute("DELETE FROM grid")
        store._db.commit()
        assert len(store.cells()) == 36 and len(build_report(store).models) == 2


def test_plan_and_recorded_grid_agree(wide_run):
    plan = plan_study(load_study(wide_run.run_dir.parent / "wide.yaml"))
    with Store(wide_run.run_dir / STORE_NAME) as store:
        ids = {r[0] for r in store._db.execute("SELECT key FROM grid WHERE kind = 'cell'")}
    assert ids == {c.id for j in plan.infers for c in j.cells()}
