from pathlib import Path

import pytest

from hwsim.analog.presets import list_presets, load_preset, presets_dir
from hwsim.engine.rpu import to_rpu_config
from hwsim.errors import ConfigError, SimulationError
from hwsim.util.timefmt import format_time, parse_times

PRESET_FILES = sorted(presets_dir().glob("*.yaml"))


def test_shipped_presets():
    assert {"pcm", "pcm-column", "pcm-weights-only", "reram", "reram-wan2022", "ideal",
            "gaussian", "gaussian-mult"} <= set(list_presets())


def test_pcm_column_is_pcm_with_per_column_scaling():
    pcm, column = load_preset("pcm"), load_preset("pcm-column")
    assert column.mapping.weight_scaling_columnwise and not pcm.mapping.weight_scaling_columnwise
    assert column.mapping.label == "per-column, omega 1"
    assert pcm.mapping.label == "per-tile, omega 1"
    assert (column.noise_model, column.forward, column.drift_compensation) == (
        pcm.noise_model, pcm.forward, pcm.drift_compensation)
    cfg = to_rpu_config(column)
    assert cfg.mapping.weight_scaling_columnwise is True


@pytest.mark.parametrize("path", PRESET_FILES, ids=[p.name for p in PRESET_FILES])
def test_every_preset_loads_and_maps_to_aihwkit(path):
    preset = load_preset(path.stem)
    assert preset.name == path.stem and preset.description and preset.source
    for tile in ("torch", "cpp"):
        cfg = to_rpu_config(preset, tile)
        assert cfg.forward.is_perfect == preset.forward.is_perfect
        assert cfg.mapping.weight_scaling_omega == preset.mapping.weight_scaling_omega
        assert (cfg.drift_compensation is not None) == (preset.drift_compensation == "global")
    assert load_preset(path) == preset  # by path too


def test_pcm_preset_resolves_to_aihwkit_defaults_for_io():
    from aihwkit.simulator.configs import InferenceRPUConfig

    ref = InferenceRPUConfig().forward
    cfg = to_rpu_config(load_preset("pcm")).forward
    for key in ("inp_res", "inp_bound", "out_res", "out_bound", "out_noise",
                "noise_management", "bound_management", "is_perfect"):
        assert getattr(cfg, key) == pytest.approx(getattr(ref, key)) if isinstance(
            getattr(ref, key), float) else getattr(cfg, key) == getattr(ref, key), key


BAD = [
    ("name: x\ndescription: d\nsource: s\nnoise_model: {type: flash}\n",
     "noise_model.type: 'flash' is not allowed; choose one of 'none', 'pcm', 'reram-cmo', "
     "'reram-wan2022'"),
    ("name: x\ndescription: d\nsource: s\ncolour: red\n",
     "colour: unknown key; allowed keys: name, description, source, noise_model, "
     "drift_compensation, forward, mapping, weight_noise"),
    ("name: x\nsource: s\n", "description: missing required key (a string)"),
    ("name: x\ndescription: d\nsource: s\nforward: {out_noise: loud}\n",
     "forward.out_noise: 'loud' is not allowed; expected a number"),
    ("name: x\ndescription: d\nsource: s\nforward: {out_noise: -1}\n",
     "forward.out_noise: must be >= 0"),
    ("name: x\ndescription: d\nsource: s\nweight_noise: {type: additive}\n",
     "weight_noise.eta: missing required key (a number)"),
    ("name: x\ndescription: d\nsource: s\ndrift_compensation: yes\n",
     "drift_compensation: True is not allowed; choose one of 'global', 'none'"),
    ("- a\n- b\n", "expected a mapping of keys to values at the top level"),
    ("name: [unclosed\n", "invalid YAML at line"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_preset_names_file_key_and_choices(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_unknown_preset_name_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown device preset 'flash'; choose one of: "
                                          r"gaussian, gaussian-mult, ideal, pcm"):
        load_preset("flash")


def test_user_preset_by_path(tmp_path):
    path = tmp_path / "noisy.yaml"
    path.write_text(Path(presets_dir() / "pcm.yaml").read_text().replace(
        "prog_noise_scale: 1.0", "prog_noise_scale: 2.0").replace("name: pcm", "name: noisy"))
    preset = load_preset(path)
    assert preset.name == "noisy" and preset.noise_model.prog_noise_scale == 2.0
    assert to_rpu_config(preset).noise_model.prog_noise_scale == 2.0


def test_eta_only_for_weight_noise_presets():
    assert load_preset("gaussian").with_eta(0.3).eta == 0.3
    with pytest.raises(ConfigError, match="'pcm' has no weight_noise: --eta does not apply"):
        load_preset("pcm").with_eta(0.3)


@pytest.mark.parametrize("text,seconds", [
    ("1s", [1.0]), ("1h,1s", [1.0, 3600.0]), ("1d, 1w", [86400.0, 604800.0]),
    ("3600", [3600.0]), ("1y", [31536000.0]), ("10min", [600.0]),
])
def test_parse_times(text, seconds):
    assert parse_times(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1d", "soon", "1 fortnight", "", "nan", "inf"])
def test_bad_times(text):
    with pytest.raises(ConfigError, match="inference time"):
        parse_times(text)


@pytest.mark.parametrize("text,message", [
    ("1d,,1y", "--t-inference 1d,,1y: entry 2 is empty"),
    ("1d,1y,", "--t-inference 1d,1y,: entry 3 is empty"),
    (",1d", "entry 1 is empty"),
    ("1d,1h,1d", "--t-inference 1d,1h,1d: '1d' is given twice"),
    ("1d,86400", "'86400' is given twice (86400 = 1d)"),
])
def test_times_with_an_empty_or_repeated_entry_are_refused(text, message):
    """An empty entry is not dropped silently, a repeated time is not computed twice."""
    with pytest.raises(ConfigError) as e:
        parse_times(text, "--t-inference")
    assert message in str(e.value)


def test_format_time():
    assert [format_time(t) for t in (1, 3600, 86400, 31536000, 90, None)] == [
        "1s", "1h", "1d", "1y", "90s", "-"]


def test_wan2022_defined_only_at_its_times():
    preset = load_preset("reram-wan2022")
    preset.check_times([1.0, 86400.0, 172800.0])
    with pytest.raises(SimulationError, match=r"defined only at t = 1s, 1d, 2d; asked for 1h"):
        preset.check_times([1.0, 3600.0])
