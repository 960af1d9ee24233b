"""The notebook API: the README's example runs as written; simulate() on a torch dataset;
pandas and plain-records tables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import hwsim
from hwsim.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- notebook-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no notebook example"
    return match.group(1)


def test_the_readme_notebook_example_runs(cnn_bn_digits, tmp_path, monkeypatch, one_thread,
                                          capsys):
    """Exactly the README's code, in a folder holding what its text says it needs."""
    from hwsim.study import load_study, run_study

    monkeypatch.chdir(tmp_path)
    shutil.copy(cnn_bn_digits[0], "cnn-digits.pt")
    Path("digits.yaml").write_text(
        "name: digits\ndatasets: [{name: digits, epochs: 1}]\narchitectures: [cnn]\n"
        "bn: [bn]\nbn_modes: [keep, fold]\npresets: [pcm]\ntimes: [1s, 1d]\nrepeats: 1\n")
    run_study(load_study("digits.yaml"), "runs/digits", progress=False, log=lambda m: None)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    table, runs = namespace["table"], namespace["runs"]
    assert set(table["bn_mode"]) == {"keep", "fold", "recal"}
    assert len(table) == 3 * 3 * 2  # modes x times x repeats
    assert table["accuracy"].between(0, 1).all()
    assert (table["digital_accuracy"] > 0.5).all()  # the trained cnn, measured
    assert len(runs) == 2 * 2 and set(runs["bn_mode"]) == {"keep", "fold"}
    assert "keep" in capsys.readouterr().out


def test_simulate_a_torch_dataset_and_plain_records(cnn_bn_digits, digits, monkeypatch,
                                                    one_thread):
    from hwsim.data import normalize

    model = cnn_bn_digits[1].model
    training, before = model.training, {k: v.clone() for k, v in model.state_dict().items()}
    test = torch.utils.data.TensorDataset(normalize(digits.test_x[:60], digits.mean,
                                                    digits.std).contiguous(), digits.test_y[:60])
    with pytest.raises(ConfigError, match="pass calib_data="):
        hwsim.simulate(model, test, times=["1s"], repeats=1)
    monkeypatch.setattr("hwsim.notebook._table", lambda rows: rows)  # as without pandas
    rows = hwsim.simulate(model, torch.utils.data.DataLoader(test, batch_size=25),
                          preset="ideal", bn_modes=["keep"], repeats=1)
    ideal = hwsim.simulate(model, "digits", preset="ideal", bn_modes=["keep"], repeats=1,
                           test_subset=60)
    assert isinstance(rows, list) and rows[0]["bn_mode"] == "keep"
    # the same images, normalised by the user or by hwsim: the same accuracy
    assert rows[0]["accuracy"] == pytest.approx(ideal[0]["accuracy"])
    assert rows[0]["accuracy"] == pytest.approx(rows[0]["digital_accuracy"])
    assert model.training == training  # the user's model is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
