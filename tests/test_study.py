import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwsim.errors import ConfigError
from hwsim.study import load_study, plan_study, run_study, study_status
from hwsim.study.store import STORE_NAME, Store

TINY = """\
name: tiny
description: a tiny study for the tests
datasets:
  - name: digits
    epochs: 3
    batch_size: 32
    test_subset: 150
architectures: [cnn]
bn: [bn, no-bn]
bn_modes: [keep, fold]
presets: [pcm, gaussian]
times: [1s, 1d]
etas: [0.0, 0.5]
repeats: {repeats}
engine: {engine}
"""


def write_study(tmp_path, repeats=2, engine="aihwkit", name="tiny.yaml", **replace):
    text = TINY.format(repeats=repeats, engine=engine)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def cell_values(run_dir):
    with Store(Path(run_dir) / STORE_NAME) as store:
        return {(c["arch"], c["bn"], c["bn_mode"], c["preset"], c["eta"], c["t"], c["repeat"]):
                c["accuracy"] for c in store.cells()}


def test_plan_enumerates_the_grid(tmp_path):
    plan = plan_study(load_study(write_study(tmp_path)))
    assert len(plan.models) == 2
    # BN model: keep+fold x (pcm: 2 times, gaussian: 2 etas) x 2 repeats; no-BN: one mode
    cells = [c for j in plan.infers for c in j.cells()]
    assert len(cells) == (2 + 1) * (2 * 2 + 2 * 2)
    assert len({c.id for c in cells}) == len(cells)
    assert {c.bn_mode for c in cells if c.bn == "no-bn"} == {"none"}
    assert {c.t for c in cells if c.preset == "gaussian"} == {None}
    assert {c.eta for c in cells if c.preset == "pcm"} == {None}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    study = load_study(write_study(tmp))
    run = run_study(study, tmp / "run", progress=False, log=lambda m: None)
    return study, run


def test_tiny_study_runs_end_to_end(tiny_run):
    study, run = tiny_run
    assert run.computed_cells == 24 and run.trained == 2
    assert all(s.done == s.total for s in run.stages)
    values = cell_values(run.run_dir)
    assert len(values) == 24
    with Store(run.run_dir / STORE_NAME) as store:
        models = {m["bn"]: m for m in store.models()}
        meta = store.meta()
    assert models["bn"]["bn_layers"] == 3 and models["no-bn"]["bn_layers"] == 0
    assert models["bn"]["n_test"] == 150 and models["bn"]["digital_accuracy"] > 0.85
    # eta = 0 reproduces the digital accuracy exactly
    for (_arch, bn, _mode, preset, eta, _t, _r), acc in values.items():
        if preset == "gaussian" and eta == 0.0:
            assert acc == models[bn]["digital_accuracy"]
    assert meta["datasets"]["digits"] == {"n_test": 150, "test_total": 450, "source": meta[
        "datasets"]["digits"]["source"]}
    assert meta["study"]["repeats"] == 2


def test_rerun_computes_nothing_and_a_wider_study_only_what_is_new(tiny_run, tmp_path):
    study, reference = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    again = run_study(study, run_dir, progress=False, log=lambda m: None)
    assert again.computed_cells == 0 and again.trained == 0 and again.skipped_cells == 24
    wider = load_study(write_study(tmp_path, repeats=3))
    more = run_study(wider, run_dir, progress=False, log=lambda m: None)
    assert more.trained == 0 and more.computed_cells == 12 and more.skipped_cells == 24
    values = cell_values(run_dir)
    assert len(values) == 36
    old = cell_values(reference.run_dir)
    assert {k: v for k, v in values.items() if k[-1] < 2} == old


def test_changed_training_settings_supersede_old_cells(tmp_path):
    base = load_study(write_study(tmp_path, repeats=1, name="a.yaml",
                                  **{"presets: [pcm, gaussian]": "presets: [gaussian]"}))
    run_study(base, tmp_path / "run", progress=False, log=lambda m: None)
    changed = load_study(write_study(tmp_path, repeats=1, name="b.yaml", **{
        "presets: [pcm, gaussian]": "presets: [gaussian]", "epochs: 3": "epochs: 2"}))
    run = run_study(changed, tmp_path / "run", progress=False, log=lambda m: None)
    assert run.trained == 2 and run.computed_cells == 6
    with Store(tmp_path / "run" / STORE_NAME) as store:
        assert len(store.cells()) == 6 and len(store.cells(current_only=False)) == 12


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_result(tiny_run, tmp_path):
    _, tiny = tiny_run
    study_file = write_study(tmp_path, repeats=6)  # 72 cells: time to kill it mid-way
    # same checkpoints (training is deterministic; copying saves the time): kill during inference
    for name in ("reference", "killed"):
        shutil.copytree(tiny.run_dir / "checkpoints", tmp_path / name / "checkpoints")
    reference = run_study(load_study(study_file), tmp_path / "reference", progress=False,
                          log=lambda m: None)
    assert reference.computed_cells == 72
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hwsim", "study", "run", str(study_file), "--out", str(run_dir),
           "--no-report"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db = run_dir / STORE_NAME
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    n = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 4:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 4 <= len(cell_values(run_dir)) < 72
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already in the store" in resumed.stderr
    assert cell_values(run_dir) == cell_values(reference.run_dir)


def test_status(tiny_run, tmp_path):
    study, run = tiny_run
    stages = study_status(plan_study(study), run.run_dir)
    assert [(s.name, s.done, s.total) for s in stages] == [
        ("train", 2, 2), ("infer pcm", 12, 12), ("infer gaussian", 12, 12)]
    empty = study_status(plan_study(study), tmp_path / "nothing")
    assert [s.done for s in empty] == [0, 0, 0]


BAD = [
    ({"architectures: [cnn]": "architectures: [cnn, resnet18]"},
     "architectures[1]: unknown architecture 'resnet18'; choose one of: cnn, resnet20"),
    ({"presets: [pcm, gaussian]": "presets: [pcm, flash]"},
     "presets[1]: unknown device preset 'flash'; choose one of:"),
    ({"bn: [bn, no-bn]": "bn: [bn, without]"},
     "bn[1]: 'without' is not allowed; choose one of 'bn', 'no-bn'"),
    ({"times: [1s, 1d]": "times: [1s, never]"}, "times[1]: bad inference time 'never'"),
    ({"etas: [0.0, 0.5]": "etas: []"}, "etas: an empty list; list at least one value"),
    ({"etas: [0.0, 0.5]": "etas: [0.0, 0.5, 0.5]"},
     "etas[2]: 0.5 is listed twice: etas[1] and etas[2]"),
    ({"times: [1s, 1d]": "times: []"}, "times: an empty list"),
    ({"times: [1s, 1d]": "times: [1s, 1d, 24h]"},
     "times[2]: '24h' (1d) is listed twice (the same as '1d'): times[1] and times[2]"),
    ({"times: [1s, 1d]": "times: [1s, 1d, 1s]"}, "times[2]: '1s' is listed twice: times[0]"),
    ({"bn_modes: [keep, fold]": "bn_modes: []"}, "bn_modes: an empty list"),
    ({"bn_modes: [keep, fold]": "bn_modes: [keep, fold, keep]"}, "bn_modes[2]: 'keep' is listed"),
    ({"architectures: [cnn]": "architectures: []"}, "architectures: an empty list"),
    ({"architectures: [cnn]": "architectures: [cnn, cnn]"},
     "architectures[1]: 'cnn' is listed twice: architectures[0] and architectures[1]"),
    ({"bn: [bn, no-bn]": "bn: []"}, "bn: an empty list"),
    ({"bn: [bn, no-bn]": "bn: [bn, no-bn, bn]"}, "bn[2]: 'bn' is listed twice"),
    ({"presets: [pcm, gaussian]": "presets: []"}, "presets: an empty list"),
    ({"presets: [pcm, gaussian]": "presets: [pcm, gaussian, pcm]"}, "presets[2]: 'pcm' is listed"),
    ({"repeats: 2": "repeats: 2\nseeds: []"}, "seeds: an empty list"),
    ({"repeats: 2": "repeats: 2\nseeds: [0, 1, 0]"}, "seeds[2]: 0 is listed twice"),
    ({"datasets:\n  - name: digits\n    epochs: 3\n    batch_size: 32\n    test_subset: 150\n":
      "datasets: []\n"}, "datasets: an empty list"),
    ({"    test_subset: 150\n": "    test_subset: 150\n  - name: digits\n"},
     "datasets[1]: 'digits' is listed twice: datasets[0] and datasets[1]"),
    ({"    test_subset: 150\n": "    test_subset: 150\n    architectures: []\n"},
     "datasets[0].architectures: an empty list"),
    ({"    test_subset: 150\n": "    test_subset: 150\n    architectures: [cnn, vgg12]\n"},
     "datasets[0].architectures[1]: unknown architecture 'vgg12'"),
    ({"repeats: 2": "repeats: 2\nlearned_factor: 1.0"},
     "learned_factor: must be above 1 (chance) and below the number of classes of digits (10)"),
    ({"repeats: 2": "repeats: 2\nlearned_factor: 10"}, "learned_factor: must be above 1"),
    ({"repeats: 2": "repeats: 0"}, "repeats: must be an integer in [1, 1e+06]"),
    ({"  - name: digits": "  - name: mnist"}, "datasets[0].name: unknown dataset 'mnist'"),
    ({"engine: aihwkit": "engine: warp"}, "engine: unknown engine 'warp'; choose one of:"),
    ({"repeats: 2": "repeats: 2\ncolour: red"}, "colour: unknown key; allowed keys: name,"),
    ({"    epochs: 3": "    epochs: three"}, "datasets[0].epochs: 'three' is not allowed"),
    ({"presets: [pcm, gaussian]": "presets: [reram-wan2022]", "times: [1s, 1d]": "times: [1s, 1h]"},
     "presets[0]: device preset 'reram-wan2022' (aihwkit ReRamWan2022NoiseModel) is defined "
     "only at t = 1s, 1d, 2d"),
]


@pytest.mark.parametrize("replace,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_study_file(tmp_path, replace, message):
    path = write_study(tmp_path, **replace)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_shipped_studies_are_valid():
    root = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(root.glob("*.yaml"))
    assert {f.name for f in files} >= {"quick.yaml", "paper_cifar10.yaml", "paper_cifar100.yaml",
                                       "remedies.yaml"}
    for f in files:
        plan = plan_study(load_study(f))
        assert plan.models and plan.infers


def test_cli_status_and_report(tiny_run, tmp_path):
    from click.testing import CliRunner

    from hwsim.cli import cli

    _, run = tiny_run
    runner = CliRunner()
    status = runner.invoke(cli, ["study", "status", str(run.run_dir)])
    assert status.exit_code == 0, status.output
    assert "infer pcm" in status.output and "12/12" in status.output
    report = runner.invoke(cli, ["report", str(run.run_dir), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "data:image/png;base64," in html and "cnn" in md and "BN folded" in md
    bad = runner.invoke(cli, ["report", str(run.run_dir), "--format", "pdf"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "html, md" in bad.output
    missing = runner.invoke(cli, ["study", "status", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no results store" in missing.output


def test_a_shipped_study_is_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not in the checkout: found in the package data
    study = load_study("quick")
    assert study.name == "quick" and Path(study.path).name == "quick.yaml"
    assert load_study("quick.yaml").path == study.path
    with pytest.raises(ConfigError, match="quik: no such study file, nor a shipped study of "
                                          "that name; shipped: diagnose, paper_cifar10, "
                                          "paper_cifar100, quick, remedies, torchvision_fmnist"):
        load_study("quik")
    local = write_study(tmp_path, name="quick.yaml")  # a file of that name wins
    assert load_study("quick.yaml").path == "quick.yaml" and local.is_file()


def test_the_main_job_can_answer_both_claims():
    """quick.yaml: on some dataset, at least three architectures with different numbers of BN
    layers (the report's BN-layer trend needs three), each with and without BN."""
    from hwsim.models import count_bn_layers, create_model

    study = load_study("quick")
    assert set(study.bn) == {"bn", "no-bn"}
    counts = {}
    for plan in study.datasets:
        archs = study.architectures_of(plan)
        counts[plan.name] = {count_bn_layers(create_model(a, bn=True, num_classes=10,
                                                          in_channels=1)) for a in archs}
    assert max(len(c) for c in counts.values()) >= 3, counts


def test_per_dataset_architectures_and_the_learned_warning(tmp_path):
    """A dataset's own architecture list replaces the study's; a model that stays at chance
    gets one warning line naming what to change in the study file, and the factor comes from
    the study (learned_factor)."""
    path = tmp_path / "w.yaml"
    path.write_text("name: w\ndatasets:\n"
                    "  - {name: digits, epochs: 1, lr: 1.0e-9, test_subset: 100,"
                    " architectures: [cnn]}\n"
                    "architectures: [resnet20, vgg11]\nbn: [no-bn]\npresets: [ideal]\n"
                    "times: [1s]\nrepeats: 1\nengine: aihwkit\nlearned_factor: 1.5\n")
    study = load_study(path)
    plan = plan_study(study)
    assert [m.key.arch for m in plan.models] == ["cnn"]
    logs = []
    run_study(study, tmp_path / "run", progress=False, log=logs.append)
    warnings = [m for m in logs if m.startswith("Warning: ")]
    assert len(warnings) == 1, logs
    assert "cnn without BN on digits (seed 0) did not learn" in warnings[0]
    assert "below 15% (1.5x chance, 10%)" in warnings[0]
    assert f"datasets[0].epochs, datasets[0].lr in {path}" in warnings[0]
    with Store(tmp_path / "run" / STORE_NAME) as store:
        assert store.meta()["study"]["learned_factor"] == 1.5
    logs.clear()  # a rerun (cached model) warns again
    run_study(study, tmp_path / "run", progress=False, log=logs.append)
    assert sum(m.startswith("Warning: ") for m in logs) == 1
