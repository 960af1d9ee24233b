"""Remedies in studies: BN mode recal (with calib_size) and hardware-aware training variants
(hwa, hwa_clip) run, resume and report; a plain study keeps its hashes, names and ids."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner

from hwsim.cli import cli
from hwsim.errors import ConfigError
from hwsim.report import build_report, write_report
from hwsim.report.answers import REMEDIES_QUESTION
from hwsim.study import load_study, plan_study, run_study, study_status
from hwsim.study.store import STORE_NAME, Store

PLAIN = """\
name: remedies-test
datasets:
  - name: digits
    epochs: 3
    batch_size: 32
    train_subset: 600
    test_subset: 120
architectures: [cnn]
bn: [bn, no-bn]
bn_modes: [keep]
presets: [gaussian]
etas: [0.3]
repeats: 3
engine: fast
"""
# the same study with the remedies: recal beside keep, and an HWA variant of every model
REMEDIES = PLAIN.replace("bn_modes: [keep]", "bn_modes: [keep, recal]\ncalib_size: 64\n"
                         "hwa: [0, 0.1]\nhwa_clip: 2.5")


def write(folder, text, name="study.yaml"):
    path = folder / name
    path.write_text(text)
    return path


def quiet_run(path, run_dir):
    return run_study(load_study(path), run_dir, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def remedies_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("remedies")
    path = write(tmp, REMEDIES)
    return path, quiet_run(path, tmp / "run")


def test_no_hwa_keeps_every_hash_name_and_id(tmp_path):
    """hwa: [0] (the default) and a study without the remedies plan the same models, with
    the same hashes and checkpoint names, and the same cells: old run folders resume."""
    plain = plan_study(load_study(write(tmp_path, PLAIN, "plain.yaml")))
    remedied = plan_study(load_study(write(tmp_path, REMEDIES, "remedies.yaml")))
    explicit = plan_study(load_study(write(tmp_path, PLAIN + "hwa: [0]\n", "zero.yaml")))
    standard = [m for m in remedied.models if not m.key.hwa]
    for other in (standard, explicit.models):
        assert [(m.key.id, m.model_hash, m.checkpoint_name) for m in other] == [
            (m.key.id, m.model_hash, m.checkpoint_name) for m in plain.models]
    ids = {c.id for j in plain.infers for c in j.cells()}
    assert ids == {c.id for j in explicit.infers for c in j.cells()}
    assert ids < {c.id for j in remedied.infers for c in j.cells()}
    hwa = [m for m in remedied.models if m.key.hwa]
    assert [m.key.hwa for m in hwa] == [0.1, 0.1]
    assert all("-hwa0.1-" in m.checkpoint_name and m.key.id.endswith("|hwa=0.1") for m in hwa)
    assert all(m.train.hwa_noise == 0.1 and m.train.hwa_clip == 2.5 for m in hwa)
    assert {m.model_hash for m in hwa}.isdisjoint({m.model_hash for m in standard})
    recal = [j for j in remedied.infers if j.bn_mode == "recal"]
    assert recal and all(j.calib_size == 64 and j.cells()[0].id.endswith("|calib=64")
                         for j in recal)


def test_a_study_with_the_remedies_runs_resumes_and_reports(remedies_run, tmp_path):
    path, run = remedies_run
    # 2 BN models x (keep, recal) + 2 no-BN models, x 1 eta x 3 repeats
    assert run.trained == 4 and run.computed_cells == (2 * 2 + 2) * 3
    assert [(s.name, s.done, s.total) for s in run.stages] == [("train", 4, 4),
                                                               ("infer gaussian", 18, 18)]
    store_path = run.run_dir / STORE_NAME
    with Store(store_path) as store:
        cells = store.cells()
        meta = store.meta()
        assert {(c["bn_mode"], c["hwa"], c["calib_size"]) for c in cells} == {
            ("keep", 0.0, None), ("recal", 0.0, 64), ("none", 0.0, None),
            ("keep", 0.1, None), ("recal", 0.1, 64), ("none", 0.1, None)}
    recal = meta["recalibration"]
    assert set(recal) == {"digits|cnn|bn|0", "digits|cnn|bn|0|hwa=0.1"}
    assert all(e["calib_size"] == 64 and e["count"] == 3 and e["seconds"] > 0
               for e in recal.values())

    # resume: nothing to do; then lose the last repeat's recal cells (a kill) and get
    # exactly them back, with the same accuracies
    assert quiet_run(path, run.run_dir).computed_cells == 0
    with closing(sqlite3.connect(store_path)) as con, con:
        lost = dict(con.execute("SELECT key, accuracy FROM cells WHERE bn_mode = 'recal' "
                                "AND repeat = 2").fetchall())
        con.execute("DELETE FROM cells WHERE bn_mode = 'recal' AND repeat = 2")
    assert len(lost) == 2
    again = quiet_run(path, run.run_dir)
    assert again.computed_cells == 2 and again.trained == 0
    with closing(sqlite3.connect(store_path)) as con:
        back = dict(con.execute("SELECT key, accuracy FROM cells WHERE bn_mode = 'recal' "
                                "AND repeat = 2").fetchall())
    assert back == lost
    assert [s.done for s in study_status(plan_study(load_study(path)), run.run_dir)] == [4, 18]

    with Store(store_path) as store:
        report = build_report(store)
    remedies = [a for a in report.answers["digits"] if a.question == REMEDIES_QUESTION]
    assert len(remedies) == 1 and report.answers["digits"][-1] is remedies[0]
    answer = remedies[0]
    assert "BN is still worse than no BN (Holm-corrected p < 0.05) in" in answer.answer
    comparisons = {v.comparison for v in report.verdicts}
    assert {"recalibration", "BN recalibrated vs no BN", "BN kept vs no BN (HWA 0.1)",
            "HWA η 0.1, clip ±2.5σ vs standard training (BN kept)",
            "HWA η 0.1, clip ±2.5σ vs standard training (BN recalibrated)",
            "HWA η 0.1, clip ±2.5σ vs standard training (no BN)"} <= comparisons
    assert any("64 training images per chip and time" in d for d in answer.details)
    table = answer.tables[0]
    assert table.headers[3:] == ("no BN (%)", "BN kept (%)", "BN recalibrated (%)",
                                 "no BN + HWA 0.1 (%)", "BN kept + HWA 0.1 (%)",
                                 "BN recalibrated + HWA 0.1 (%)")
    assert [r[:3] for r in table.rows] == [("cnn", "gaussian", "η = 0.3")]
    assert {f.kind for f in answer.figures} == {"remedy-forest", "remedy-eta"}
    # the claims' verdicts stay between the standard-training variants
    claim = [v for v in report.verdicts if v.comparison == "BN kept vs no BN"]
    assert claim and all(v.difference == "no BN − BN kept" for v in claim)

    out = tmp_path / "out"
    out.mkdir()
    md = write_report(run.run_dir, "md", out_dir=out)[0].read_text()
    assert f"### {REMEDIES_QUESTION}" in md
    assert md.index("Claim 1") < md.index(REMEDIES_QUESTION)
    assert (out / "figures" / "digits-remedies-forest.png").is_file()
    assert (out / "figures" / "digits-cnn-gaussian-remedies-vs-eta.png").is_file()

    result = CliRunner().invoke(cli, ["study", "status", str(run.run_dir)])
    assert result.exit_code == 0 and "18/18" in result.output


def test_a_study_without_remedies_has_no_remedies_section(tmp_path):
    from report_store import make_store

    with Store(make_store(tmp_path) / STORE_NAME) as store:
        report = build_report(store)
    assert all(a.question != REMEDIES_QUESTION for answers in report.answers.values()
               for a in answers)
    assert not [f for f in report.figures if f.kind.startswith("remedy-")]


BAD = [
    ({"bn_modes: [keep]": "bn_modes: [keep]\ncalib_size: 64"},
     "calib_size: set, but bn_modes does not list 'recal' (choose from keep, fold, recal)"),
    ({"bn_modes: [keep]": "bn_modes: [recal]\ncalib_size: 0"},
     "calib_size: must be an integer in [1, 1e+09] (training images per recalibration), got 0"),
    ({"bn_modes: [keep]": "bn_modes: [recal]\ncalib_size: many"},
     "calib_size: 'many' is not allowed"),
    ({"bn_modes: [keep]": "bn_modes: [keep, recalibrate]"},
     "bn_modes[1]: 'recalibrate' is not allowed; choose one of 'keep', 'fold', 'recal'"),
    ({"bn_modes: [keep]": "bn_modes: [recal]", "bn: [bn, no-bn]": "bn: [no-bn]"},
     "bn_modes: 'recal' needs models with BN, but bn lists only 'no-bn'"),
    ({"repeats: 3": "repeats: 3\nhwa: [0, -0.1]"}, "hwa[1]: must be a finite number in [0, 10]"),
    ({"repeats: 3": "repeats: 3\nhwa: []"}, "hwa: an empty list"),
    ({"repeats: 3": "repeats: 3\nhwa: [0, 0.06, 0.06]"},
     "hwa[2]: 0.06 is listed twice: hwa[1] and hwa[2]"),
    ({"repeats: 3": "repeats: 3\nhwa_clip: 2"},
     "hwa_clip: set, but hwa lists no training noise above 0"),
    ({"repeats: 3": "repeats: 3\nhwa: [0, 0.06]\nhwa_clip: 0"},
     "hwa_clip: must be a finite number in (0, 1000]"),
    ({"repeats: 3": "repeats: 3\nhwa_noise: [0.06]"}, "hwa_noise: unknown key; allowed keys:"),
]


@pytest.mark.parametrize("replace,message", BAD, ids=[m.split(":")[0] + str(i)
                                                     for i, (_, m) in enumerate(BAD)])
def test_bad_remedy_keys(tmp_path, replace, message):
    text = PLAIN
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    result = CliRunner().invoke(cli, ["study", "run", str(path), "--out",
                                      str(tmp_path / "run")])
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: ")
    assert not (tmp_path / "run").exists()  # nothing written


def test_the_shipped_remedies_study_measures_every_remedy():
    """experiments/remedies.yaml: BN recalibrated beside kept, folded and no BN, each with
    standard and hardware-aware training (aihwkit's tutorial settings), on PCM and Gaussian
    noise, for three architectures (the BN-layer trend) with and without BN."""
    study = load_study("remedies")
    assert set(study.bn_modes) == {"keep", "fold", "recal"} and set(study.bn) == {"bn", "no-bn"}
    assert list(study.hwa) == [0.0, 0.06] and study.hwa_clip == 2.0
    assert set(study.presets) == {"pcm", "pcm-column", "gaussian"}
    assert len(study.architectures) >= 3
    plan = plan_study(study)
    assert {m.key.hwa for m in plan.models} == {0.0, 0.06}
