"""Study files: a YAML grid of datasets x architectures x BN variants x training variants x
presets x times/etas, validated into a :class:`Study` (every number checked before work).

Remedies (issue 9): ``bn_modes`` may list ``recal`` (BN statistics re-estimated on every chip
and time from ``calib_size`` training images), and ``hwa`` lists training variants: each
level other than 0 trains every model once more, hardware-aware (weight noise of that level,
``hwa_clip``), from scratch with the dataset's recipe. Level 0 is standard training, with the
same model hashes, checkpoint names and cell ids as a study without the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hwsim.analog.presets import DevicePreset, load_preset
from hwsim.analog.recalibrate import DEFAULT_CALIB_SIZE
from hwsim.config import build, read_yaml
from hwsim.data import dataset_entry, dataset_info
from hwsim.engine import DEFAULT_ENGINE, ENGINES
from hwsim.errors import ConfigError, HwsimError
from hwsim.models import check_arch
from hwsim.resources import shipped_dir
from hwsim.stats import LEARNED_FACTOR
from hwsim.training.config import TRAIN_DEFAULTS
from hwsim.util.timefmt import format_time, parse_time
from hwsim.validate import check, check_fields


@dataclass(frozen=True)
class ImportedCheckpoint:
    """A model trained elsewhere: evaluated and simulated as it is, never trained."""

    arch: str  # one of the dataset's architectures
    path: str  # an hwsim checkpoint or one from elsewhere; relative to the study file


@dataclass(frozen=True)
class DatasetPlan:
    """Training and evaluation settings for one dataset of a study."""

    name: str
    epochs: int = TRAIN_DEFAULTS["epochs"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    lr: float = TRAIN_DEFAULTS["lr"]
    grad_clip: float | None = TRAIN_DEFAULTS["grad_clip"]
    weight_decay: float = TRAIN_DEFAULTS["weight_decay"]
    train_subset: int | None = None  # first N training images (None: all)
    test_subset: int | None = None  # evaluate on the first N test images (None: all)
    architectures: list[str] | None = None  # this dataset's architectures (None: the study's)
    # architectures whose model comes from a file instead of training (one model each)
    checkpoints: list[ImportedCheckpoint] | None = None

    def __post_init__(self):  # the same rules as the command line's (hwsim.validate)
        check_fields(self, "epochs", "batch_size", "lr", "grad_clip", "weight_decay",
                     "train_subset", "test_subset")


@dataclass(frozen=True)
class DiagnoseSpec:
    """A study's ``diagnose`` switch: diagnose (``hwsim diagnose``, BN kept) the BN model of
    each named architecture (first training seed, standard training) on every dataset that
    trains it, under every preset of the study, beside its no-BN twin (``--compare``) when the
    study trains one; the report answers where the accuracy goes."""

    architectures: list[str]
    repeats: int = 3  # chips per diagnosis
    test_subset: int | None = None  # None: the dataset's own test_subset
    eta: float | None = None  # weight-noise presets: None = the study's largest eta
    time: str | None = None  # time-dependent presets: None = the study's largest time

    def __post_init__(self):
        check_fields(self, "repeats", "test_subset")
        check("eta", self.eta)


@dataclass(frozen=True)
class Study:
    """A validated study file."""

    name: str
    architectures: list[str]
    presets: list[str]
    datasets: list[DatasetPlan]
    description: str = ""
    bn: list[Literal["bn", "no-bn"]] = ("bn", "no-bn")
    bn_modes: list[Literal["keep", "fold", "recal"]] = ("keep", "fold")
    # BN recalibration (bn mode recal): training images per recalibration
    calib_size: int = DEFAULT_CALIB_SIZE
    # training variants: hardware-aware training noise levels (0: standard training) and the
    # weight clipping of the HWA models (+-hwa_clip x std of each layer; null: none)
    hwa: list[float] = (0.0,)
    hwa_clip: float | None = None
    times: list[str] = ("1s", "1h", "1d", "1w", "1y")
    etas: list[float] = ()
    repeats: int = 5
    seeds: list[int] = (0,)
    engine: str = DEFAULT_ENGINE
    data_dir: str | None = None
    # a model learned when its digital accuracy is >= learned_factor x chance (hwsim.stats)
    learned_factor: float = LEARNED_FACTOR
    # per-layer sensitivity and BN statistics for the models it names (hwsim.diagnose)
    diagnose: DiagnoseSpec | None = None
    path: str = ""

    def __post_init__(self):  # the same rules as the command line's (hwsim.validate)
        check_fields(self, "calib_size", "hwa_clip", "repeats")
        for key, rule in (("etas", "eta"), ("hwa", "hwa_noise"), ("seeds", "seed")):
            for i, value in enumerate(getattr(self, key)):
                check(f"{key}[{i}]", value, rule)

    @property
    def time_seconds(self) -> list[float]:
        return sorted({parse_time(t) for t in self.times})

    def architectures_of(self, plan: DatasetPlan) -> list[str]:
        """The architectures trained on one dataset: its own list, else the study's."""
        return list(plan.architectures if plan.architectures is not None
                    else self.architectures)


# Every list of a study file; each must be non-empty when given, without repeated entries.
_LIST_KEYS = ("datasets", "architectures", "bn", "bn_modes", "presets", "times", "etas", "seeds",
              "hwa")
SHIPPED_STUDIES = "experiments"  # folder of hwsim's package data with the shipped studies


def shipped_studies() -> list[str]:
    """Names of the studies shipped with hwsim (``experiments/*.yaml``)."""
    return sorted(p.stem for p in shipped_dir(SHIPPED_STUDIES).glob("*.yaml"))


def find_study(name_or_path: str | Path) -> Path:
    """A study file: an existing path, else a shipped study by name (``quick``).

    Raises:
        ConfigError: neither a file nor a shipped study's name (lists the shipped ones).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    stem = text.removesuffix(".yaml").removesuffix(".yml")
    shipped = shipped_dir(SHIPPED_STUDIES) / f"{stem}.yaml"
    if "/" not in text and shipped.is_file():
        return shipped
    raise ConfigError(f"{text}: no such study file, nor a shipped study of that name; shipped: "
                      f"{', '.join(shipped_studies())}")


def load_study(name_or_path: str | Path) -> Study:
    """Read and validate a study file (a path, or the name of a shipped study).

    Raises:
        ConfigError: naming the file, the key and the allowed values.
    """
    path = find_study(name_or_path)
    raw = read_yaml(path)
    study = dataclasses.replace(build(Study, raw, path), path=str(path))
    where = str(path)

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {msg}")

    def check_list(key: str, values, given: bool, same=lambda v: v, show=repr) -> None:
        """Refuse an empty list that was written out, and any entry given twice."""
        if given and not values:
            raise bad(key, "an empty list; list at least one value (or leave the key out)")
        seen: dict = {}
        for i, v in enumerate(values):
            k = same(v)
            if k in seen:
                j = seen[k]
                twice = "" if show(v) == show(values[j]) else f" (the same as {show(values[j])})"
                raise bad(f"{key}[{i}]", f"{show(v)} is listed twice{twice}: {key}[{j}] and "
                                         f"{key}[{i}]")
            seen[k] = i

    for key in _LIST_KEYS:
        values = getattr(study, key)
        if key == "datasets":
            check_list(key, values, key in raw, same=lambda p: p.name, show=lambda p: repr(p.name))
        elif key == "times":
            for i, t in enumerate(values):
                try:
                    parse_time(t)
                except ConfigError as e:
                    raise bad(f"times[{i}]", str(e)) from None
            check_list(key, values, key in raw, same=parse_time,
                       show=lambda t: f"{t!r}" if str(t) == format_time(parse_time(t))
                       else f"{t!r} ({format_time(parse_time(t))})")
        else:
            check_list(key, values, key in raw)
    def check_architecture(key: str, arch) -> None:
        """A registered name, torchvision:NAME or a factory, buildable as each of study.bn."""
        try:
            for variant in study.bn:
                check_arch(str(arch), variant == "bn")
        except ConfigError as e:
            raise bad(key, str(e)) from None

    for i, arch in enumerate(study.architectures):
        check_architecture(f"architectures[{i}]", arch)
    for i, plan in enumerate(study.datasets):
        try:
            dataset_entry(plan.name)
        except HwsimError as e:
            raise bad(f"datasets[{i}].name", str(e)) from None
        if plan.architectures is not None:
            key = f"datasets[{i}].architectures"
            check_list(key, plan.architectures, True)
            for j, arch in enumerate(plan.architectures):
                check_architecture(f"{key}[{j}]", arch)
        if plan.test_subset is not None and plan.test_subset > dataset_info(plan.name).test_size:
            raise bad(f"datasets[{i}].test_subset", f"{plan.name} has "
                      f"{dataset_info(plan.name).test_size} test images, asked for the first "
                      f"{plan.test_subset}")
        _check_imports(study, i, plan, bad)
        classes = dataset_info(plan.name).num_classes
        if not 1 < study.learned_factor < classes:
            raise bad("learned_factor", f"must be above 1 (chance) and below the number of "
                                        f"classes of {plan.name} ({classes}), got "
                                        f"{study.learned_factor:g}")
    try:
        ENGINES.check(study.engine)
    except ConfigError as e:
        raise bad("engine", str(e)) from None
    _check_remedies(study, raw, bad)
    _check_diagnose(study, bad)
    presets = study_presets(study)
    for i, name in enumerate(study.presets):
        preset = presets[name]
        if preset.weight_noise is not None and not study.etas:
            raise bad("etas", f"preset {name!r} has weight noise: list the noise levels (etas)")
        try:
            if preset.time_dependent:
                preset.check_times(study.time_seconds)
        except HwsimError as e:
            raise bad(f"presets[{i}]", str(e)) from None
    return study


def _check_remedies(study: Study, raw: dict, bad) -> None:
    """calib_size only with BN mode recal, hwa_clip only with an HWA level above 0 (their
    ranges are checked by the shared rules, in Study.__post_init__)."""
    if "calib_size" in raw:
        if "recal" not in study.bn_modes:
            raise bad("calib_size", "set, but bn_modes does not list 'recal' (choose from "
                                    "keep, fold, recal); add recal or leave calib_size out")
    if "recal" in study.bn_modes and "bn" not in study.bn:
        raise bad("bn_modes", "'recal' needs models with BN, but bn lists only 'no-bn'")
    if study.hwa_clip is not None:
        if not any(study.hwa):
            raise bad("hwa_clip", "set, but hwa lists no training noise above 0 (e.g. "
                                  "hwa: [0, 0.06]); add a level or leave hwa_clip out")


def _check_diagnose(study: Study, bad) -> None:
    """diagnose names architectures the study trains with BN, at an eta and time it has."""
    d = study.diagnose
    if d is None:
        return
    if "bn" not in study.bn:
        raise bad("diagnose", "diagnoses BN models, but bn lists only 'no-bn'")
    if not d.architectures:
        raise bad("diagnose.architectures", "an empty list; name at least one architecture")
    trained = {a for plan in study.datasets for a in study.architectures_of(plan)}
    for i, arch in enumerate(d.architectures):
        if arch not in trained:
            raise bad(f"diagnose.architectures[{i}]", f"{arch!r} is not trained by this study; "
                                                      f"choose from: {', '.join(sorted(trained))}")
    if len(set(d.architectures)) != len(d.architectures):
        raise bad("diagnose.architectures", "an architecture is listed twice")
    if d.eta is not None and d.eta not in study.etas:
        raise bad("diagnose.eta", f"{d.eta:g} is not one of the study's etas "
                                  f"({', '.join(f'{e:g}' for e in study.etas) or 'none'})")
    if d.time is not None:
        try:
            t = parse_time(d.time)
        except ConfigError as e:
            raise bad("diagnose.time", str(e)) from None
        if t not in study.time_seconds:
            raise bad("diagnose.time", f"{d.time!r} is not one of the study's times "
                                       f"({', '.join(study.times)})")
    for plan in study.datasets:
        if not set(d.architectures) & set(study.architectures_of(plan)):
            continue
        if d.test_subset is not None and d.test_subset > (plan.test_subset or
                                                          dataset_info(plan.name).test_size):
            raise bad("diagnose.test_subset", f"{d.test_subset} is more than the "
                      f"{plan.test_subset or dataset_info(plan.name).test_size} test images "
                      f"{plan.name} is evaluated on")


def imported_path(study: Study, entry: ImportedCheckpoint) -> Path:
    """An imported checkpoint's file: a relative path is taken from the study file's folder."""
    path = Path(entry.path)
    return path if path.is_absolute() else Path(study.path).parent / path


def _check_imports(study: Study, i: int, plan: DatasetPlan, bad) -> None:
    """Each imported checkpoint names one of the dataset's architectures once, loads as that
    architecture on that dataset, and has a BN variant the study lists."""
    from hwsim.checkpoint import load_checkpoint

    archs = study.architectures_of(plan)
    seen: set[str] = set()
    for j, entry in enumerate(plan.checkpoints or ()):
        key = f"datasets[{i}].checkpoints[{j}]"
        if entry.arch not in archs:
            raise bad(f"{key}.arch", f"{entry.arch!r} is not one of this dataset's "
                                     f"architectures ({', '.join(archs)})")
        if entry.arch in seen:
            raise bad(f"{key}.arch", f"{entry.arch!r} has two checkpoints")
        seen.add(entry.arch)
        try:
            ckpt = load_checkpoint(imported_path(study, entry), arch=entry.arch,
                                   dataset=plan.name)
        except HwsimError as e:
            raise bad(f"{key}.path", str(e)) from None
        if ckpt.kind != "digital":
            raise bad(f"{key}.path", "an analog checkpoint: give the digital one")
        variant = "bn" if ckpt.bn else "no-bn"
        if variant not in study.bn:
            raise bad(f"{key}.path", f"a model {'with' if ckpt.bn else 'without'} BN, but bn "
                                     f"lists only {', '.join(study.bn)}")


def study_presets(study: Study) -> dict[str, DevicePreset]:
    """The study's presets by name; a path is taken relative to the study file's folder."""
    out = {}
    for i, name in enumerate(study.presets):
        candidate = Path(study.path).parent / name
        try:
            preset = load_preset(candidate if name.endswith((".yaml", ".yml"))
                                 and candidate.is_file() else name)
        except ConfigError as e:
            raise ConfigError(f"{study.path}: presets[{i}]: {e}") from None
        out[name] = preset
    return out


