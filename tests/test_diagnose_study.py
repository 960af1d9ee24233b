"""A study's diagnose switch: validated like the rest, persisted per diagnosis, answered in
the report."""

from __future__ import annotations

import json

import pytest

from hwsim.errors import ConfigError
from hwsim.report.build import build_report
from hwsim.report.diagnosis_answer import QUESTION
from hwsim.study import load_study, plan_study, run_study
from hwsim.study.store import STORE_NAME, Store

STUDY = """\
name: tiny-diagnose
datasets:
  - name: digits
    epochs: 3
    batch_size: 32
    test_subset: 120
architectures: [cnn]
bn: [bn, no-bn]
bn_modes: [keep]
presets: [pcm, gaussian]
times: [1d]
etas: [0.5]
repeats: 2
engine: fast
diagnose:
  architectures: [cnn]
  repeats: 2
"""


def _write(tmp_path, text=STUDY, **replace):
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_a_study_diagnoses_the_models_it_names_and_reports_them(tmp_path, one_thread):
    study = load_study(_write(tmp_path))
    plan = plan_study(study)
    assert [(j.preset_name, j.eta, j.t, j.compare is not None) for j in plan.diagnoses] == [
        ("pcm", None, 86400.0, True), ("gaussian", 0.5, None, True)]
    run = tmp_path / "run"
    lines = []
    run_study(study, run, progress=False, log=lines.append)
    files = sorted((run / "diagnose").glob("*.json"))
    assert len(files) == 2 and "[diagnose] 2 diagnoses: 0 already done, 2 to compute" in lines
    first = {p.name: p.read_bytes() for p in files}
    lines.clear()
    run_study(study, run, progress=False, log=lines.append)  # resume: nothing recomputed
    assert "[diagnose] 2 diagnoses: 2 already done, 0 to compute" in lines
    assert {p.name: p.read_bytes() for p in files} == first
    with Store(run / STORE_NAME) as store:
        report = build_report(store)
    (answer,) = [a for a in report.answers["digits"] if a.question == QUESTION]
    assert "not testable" in answer.short  # the cnn has 3 BN layers: smallest p 1/6
    assert len(answer.details) == 2 and "the layers losing most" in answer.details[0]
    assert len(answer.figures) == 6  # 2 conditions x (layers, BN statistics, depth)
    assert all(f.draw().startswith(b"\x89PNG") for f in answer.figures[:3])
    rec = json.loads(files[0].read_text())
    assert {r["model"] for r in rec["depth"]} == {"main", "compare"}


@pytest.mark.parametrize("replace, message", [
    ({"  architectures: [cnn]\n  repeats: 2": "  architectures: [resnet20]"},
     "diagnose.architectures[0]: 'resnet20' is not trained by this study; choose from: cnn"),
    ({"  repeats: 2\n": "  repeats: 0\n"}, "diagnose.repeats"),
    ({"  repeats: 2\n": "  repeats: 2\n  eta: 0.3\n"}, "diagnose.eta: 0.3 is not one of"),
    ({"  repeats: 2\n": "  repeats: 2\n  time: 1y\n"}, "diagnose.time: '1y' is not one of"),
    ({"  repeats: 2\n": "  repeats: 2\n  chips: 3\n"}, "chips"),
    ({"  repeats: 2\n": "  repeats: 2\n  test_subset: 500\n"}, "diagnose.test_subset"),
    ({"bn: [bn, no-bn]": "bn: [no-bn]"}, "diagnose"),
])
def test_bad_diagnose_keys_are_one_line_errors(tmp_path, replace, message):
    with pytest.raises(ConfigError) as e:
        load_study(_write(tmp_path, **replace))
    text = str(e.value)
    assert "\n" not in text and "study.yaml" in text and message in text, text
