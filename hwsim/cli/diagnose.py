"""hwsim diagnose."""

from __future__ import annotations

from pathlib import Path

import click

from hwsim.cli.group import cli
from hwsim.cli.options import (
    SettingType,
    add_options,
    batch_size_option,
    calib_size_option,
    compute_device_option,
    data_options,
    eta_option,
    model_options,
    repeats_option,
    seed_option,
    times_option,
)


@cli.command("diagnose")
@add_options(model_options)
@click.option("--device", "device", required=True,
              help="Device preset: a name from 'hwsim devices' or a YAML path.")
@click.option("--bn", "bn_mode", default="keep", show_default=True,
              type=click.Choice(["keep", "fold", "recal"]),
              help="BN mode of the chip (as 'hwsim infer').")
@eta_option
@times_option("1y", "Inference times, comma-separated (each one costs a full diagnosis).")
@repeats_option(5, "Chips (Monte-Carlo repeats); every measurement is paired over them.")
@seed_option
@click.option("--test-subset", type=SettingType("test_subset"), default=None,
              help="The per-layer runs evaluate the first N test images [default: all].")
@calib_size_option("Training images the BN statistics are measured (and recalibrated) on "
                   "[default: 512].")
@click.option("--depth-images", type=SettingType("test_subset"), default=200,
              show_default=True, help="Test images for the error along the depth.")
@click.option("--compare", "compare_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="CKPT",
              help="A checkpoint of the same architecture and dataset (e.g. without BN) whose "
                   "error along the depth is shown beside this one's, on chips of the same "
                   "seeds.")
@add_options(data_options)
@click.option("--engine", type=click.Choice(["fast", "aihwkit"]), default="fast",
              show_default=True, help="Simulation engine (both are seedable).")
@batch_size_option
@compute_device_option("Where to run.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for diagnosis.json, diagnosis.md and the figures "
                   "[default: diagnose-ARCH-PRESET-BN].")
def diagnose_cmd(model_path, arch, device, bn_mode, eta, times, repeats, seed, test_subset,
                 calib_size, depth_images, compare_path, dataset, data_dir, engine, batch_size,
                 compute_device, out) -> None:
    """Where the accuracy goes: per-layer sensitivity, BN statistics on the chip and the
    error along the depth of a trained (digital) checkpoint on a device preset.

    \b
    On every chip (the chips 'hwsim infer' draws with the same --seed) and time:
    - layer sensitivity: accuracy with only layer L analog (the others exact) and with every
      layer but L analog, for every weight layer L (paired over chips, 95% CIs);
    - BN statistics: each BN layer's input mean and variance through the chip against its
      stored running statistics, on --calib-size training images, then again after
      recalibrating the chip (a check of recalibration: ~0);
    - error along the depth: each layer's output, analog vs digital.

    \b
    Cost: (2 x layers + 1) x repeats x times evaluations of the test images (ResNet-20,
    22 weight layers: 45 per chip and time), plus 4 forwards of the calibration images per
    chip and time.
    --test-subset and --repeats keep it affordable; the output states both.
    """
    from hwsim.checkpoint import load_checkpoint
    from hwsim.cli.options import preset_of
    from hwsim.data import load_dataset
    from hwsim.diagnose import DiagnoseSettings, diagnose
    from hwsim.diagnose.summary import format_summary
    from hwsim.errors import CheckpointError
    from hwsim.inference.chip import check_dataset
    from hwsim.report.diagnosis import write_diagnosis
    from hwsim.util.runtime import check_writable
    from hwsim.util.timefmt import parse_times

    settings = DiagnoseSettings(times=tuple(parse_times(times, "--t-inference")),
                                repeats=repeats, seed=seed, test_subset=test_subset,
                                engine=engine, batch_size=batch_size, calib_size=calib_size,
                                depth_images=depth_images)
    preset = preset_of(device, eta)
    ckpt = load_checkpoint(model_path, arch=arch, dataset=dataset)
    if ckpt.kind != "digital":
        raise CheckpointError(f"{model_path} is an analog checkpoint: give the digital one "
                              "(diagnose converts it itself, with --device and --bn)")
    compare = load_checkpoint(compare_path) if compare_path else None
    out = out or Path(f"diagnose-{ckpt.arch}-{preset.name}-{bn_mode}")
    check_writable(out / "diagnosis.json", what="--out")
    check_dataset(ckpt, dataset or ckpt.dataset)
    data = load_dataset(dataset or ckpt.dataset, data_dir)
    diag = diagnose(ckpt, data, preset, settings, bn_mode=bn_mode, compare=compare,
                    compute_device=compute_device)
    click.echo(format_summary(diag))
    written = write_diagnosis(diag, out)
    click.echo(f"-> {out}/ ({', '.join(p.name for p in written)})")
