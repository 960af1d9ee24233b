"""Every number a user gives is checked before work starts, by one validator
(:mod:`hwsim.validate`), whether it came from an option or a study file: the bad values are
generated for every numeric option of every command and for every numeric study key."""

import math

import pytest
import yaml
from click.testing import CliRunner

from hwsim.cli import cli
from hwsim.cli.options import SettingType
from hwsim.errors import ConfigError
from hwsim.study import load_study
from hwsim.validate import RULES, check

BAD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "-1": -1, "0": 0, "huge": 1e30,
       "half": 0.5}


def rejected(rule: str) -> list[str]:
    """The generated values that ``rule`` refuses (NaN, infinities, negatives and huge numbers
    are refused by every rule: asserted below)."""
    return [k for k, v in BAD.items() if not RULES[rule].allows(v)]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_refuses_non_finite_negative_and_huge_values(rule):
    assert {"nan", "inf", "-inf", "-1", "huge"} <= set(rejected(rule))
    with pytest.raises(ConfigError, match=rf"^{rule}: must be"):
        check(rule, math.nan)


def numeric_options():
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            for p in cmd.params:
                if isinstance(p.type, SettingType):
                    yield path, p.opts[0], p.type.setting
    return list(walk(cli, []))


CASES = [(path, opt, value) for path, opt, setting in numeric_options()
         for value in rejected(setting)]


def test_every_command_with_numbers_is_covered():
    commands = {" ".join(path) for path, _, _ in numeric_options()}
    assert {"train", "infer", "convert", "study run"} <= commands


@pytest.mark.parametrize("path,opt,value", CASES,
                         ids=[f"{' '.join(p)} {o}={v}" for p, o, v in CASES])
def test_a_bad_number_on_the_command_line_is_one_line_before_any_work(tmp_path, path, opt,
                                                                      value):
    args = [*path, opt, str(BAD[value])]
    if path == ["study", "run"]:
        args += ["quick", "--executor", "ray", "--out", str(tmp_path / "run")]
    else:
        args += ["--model", str(tmp_path / "absent.pt")] if path != ["train"] else \
            ["--out", str(tmp_path / "m.pt")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and opt in lines[0]
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing was written


DATASET_KEYS = ["epochs", "batch_size", "lr", "grad_clip", "weight_decay", "train_subset",
                "test_subset"]
STUDY_KEYS = {"repeats": "repeats", "calib_size": "calib_size", "hwa_clip": "hwa_clip",
              "etas": "eta", "hwa": "hwa_noise", "seeds": "seed"}
BASE = {"name": "v", "datasets": [{"name": "digits", "epochs": 1}], "architectures": ["cnn"],
        "bn": ["bn"], "bn_modes": ["keep", "recal"], "presets": ["gaussian"], "etas": [0.1],
        "hwa": [0, 0.06], "times": ["1s"], "repeats": 1}
FILE_CASES = ([("datasets", k, k, v) for k in DATASET_KEYS for v in rejected(k)]
              + [("study", k, r, v) for k, r in STUDY_KEYS.items() for v in rejected(r)])


@pytest.mark.parametrize("where,key,rule,value", FILE_CASES,
                         ids=[f"{w}.{k}={v}" for w, k, _, v in FILE_CASES])
def test_a_bad_number_in_a_study_file_names_the_file_and_key(tmp_path, where, key, rule, value):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    number = BAD[value]
    if where == "datasets":
        raw["datasets"][0][key] = number
        expect = f"datasets[0].{key}"
    elif key in ("etas", "hwa", "seeds"):
        raw[key] = [0.1, number] if key != "seeds" else [0, number]
        expect = f"{key}[1]"
    else:
        raw[key] = number
        expect = key
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value).startswith(f"{path}: {expect}: ")


def test_a_key_given_twice_in_a_yaml_file_is_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: v\nrepeats: 2\nrepeats: 3\n")
    with pytest.raises(ConfigError, match=r"line 3: key 'repeats' is given twice"):
        load_study(path)
    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\ndescription: d\nsource: s\nforward:\n  out_noise: 0.1\n"
                      "  out_noise: 0.2\n")
    result = CliRunner().invoke(cli, ["devices", "show", str(preset)])
    assert result.exit_code == 2 and "given twice" in result.output
