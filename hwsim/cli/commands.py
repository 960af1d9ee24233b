"""hwsim models, train, devices, convert and infer."""

from __future__ import annotations

from pathlib import Path

import click

from hwsim.analog.presets import load_preset
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
    preset_of,
    repeats_option,
    seed_option,
    times_option,
)
from hwsim.training.config import TRAIN_DEFAULTS, hwa_suffix

# ----------------------------------------------------------------------------- models


@cli.command("models")
def models_cmd() -> None:
    """List the architectures with parameter count and number of BN layers, and the other
    ways to name one (torchvision builders, your own factory)."""
    import textwrap

    from hwsim.models import (
        SMALL_INPUT,
        count_bn_layers,
        count_parameters,
        create_model,
        list_models,
        torchvision_names,
    )

    click.echo(f"{'arch':<10} {'params (BN)':>12} {'params (no BN)':>15} {'BN layers':>10}")
    for name in list_models():
        with_bn = create_model(name, bn=True, num_classes=10, in_channels=3)
        without = create_model(name, bn=False, num_classes=10, in_channels=3)
        click.echo(f"{name:<10} {count_parameters(with_bn):>12,} {count_parameters(without):>15,}"
                   f" {count_bn_layers(with_bn):>10}")
    click.echo("(parameter counts for 10 classes and 3x32x32 inputs)")
    click.echo("")
    names = ", ".join(n.removeprefix("torchvision:") for n in torchvision_names())
    click.echo(textwrap.fill(
        "torchvision:NAME  any torchvision classification builder (random init), built for the "
        "dataset's classes and input channels; for inputs of "
        f"{SMALL_INPUT}x{SMALL_INPUT} or smaller with a small-input stem (first conv stride 1, "
        "a 7x7 one as 3x3; no stem max-pool; VGG pools that would shrink the map below 1x1 "
        "dropped). Without BN (--no-bn) its norm_layer is an identity and convs get a bias; "
        "builders without a norm_layer (e.g. vgg11_bn) are refused. NAME is one of: " + names,
        width=100, subsequent_indent="  "))
    click.echo(textwrap.fill(
        "package.module:function, path/to/file.py:function  your own factory, called with the "
        "keywords it takes among num_classes, in_channels, input_size and bn (this runs your "
        "code; checkpoints record only the reference).", width=100, subsequent_indent="  "))


# ----------------------------------------------------------------------------- train


@cli.command("train")
@click.option("--arch", default="cnn", show_default=True,
              help="Architecture: a name from 'hwsim models', torchvision:NAME, or your own "
                   "factory as package.module:function or path/to/file.py:function.")
@click.option("--bn/--no-bn", default=True, show_default=True,
              help="With BatchNorm after every conv, or none at all.")
@click.option("--dataset", default="fashion-mnist", show_default=True,
              help="fashion-mnist, cifar10, cifar100, digits, or imagefolder:PATH (your "
                   "images: PATH/train/CLASS/*.png and PATH/test/CLASS/*.png).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the dataset (default: ~/.cache/hwsim/data, and Debian's "
                   "/usr/share/datasets for Fashion-MNIST).")
@click.option("--epochs", type=SettingType("epochs"),
              default=TRAIN_DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=SettingType("batch_size"),
              default=TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=SettingType("lr"),
              default=TRAIN_DEFAULTS["lr"],
              show_default=True, help="Peak learning rate (linear warm-up, cosine decay).")
@click.option("--grad-clip", type=SettingType("grad_clip"),
              default=TRAIN_DEFAULTS["grad_clip"],
              show_default=True, help="Cap on the global gradient norm per step.")
@click.option("--weight-decay", type=SettingType("weight_decay"),
              default=TRAIN_DEFAULTS["weight_decay"], show_default=True)
@click.option("--seed", type=SettingType("seed"), default=0, show_default=True)
@click.option("--train-subset", type=SettingType("train_subset"), default=None,
              help="Train on the first N training examples only.")
@click.option("--hwa-noise", type=SettingType("hwa_noise"), default=0.0, show_default=True,
              metavar="ETA",
              help="Hardware-aware training: on every training forward add fresh Gaussian "
                   "noise of std ETA x max|W| to each conv/linear layer's weights (aihwkit's "
                   "additive-normal modifier; its HWA tutorial uses 0.06). 0: off.")
@click.option("--hwa-clip", type=SettingType("hwa_clip"), default=None,
              metavar="K",
              help="After every optimiser step clip each conv/linear layer's weights to "
                   "+-K x std(W) (aihwkit's layer-Gaussian clipping; its tutorial uses 2).")
@click.option("--init", "init", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="CKPT",
              help="Fine-tune from this digital checkpoint (same architecture, BN and "
                   "dataset) instead of a random initialisation.")
@compute_device_option("Where to train.")
@click.option("--device", "preset", default=None, hidden=True,
              help="Not a training option (a device preset); kept to say so.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint path [default: ARCH[-nobn]-DATASET[-hwaETA].pt].")
def train_cmd(arch, bn, dataset, data_dir, epochs, batch_size, lr, grad_clip, weight_decay, seed,
              train_subset, hwa_noise, hwa_clip, init, compute_device, preset, out) -> None:
    """Train a model on a dataset and write a checkpoint.

    With --hwa-noise (and --hwa-clip, --init) the training is hardware-aware, as aihwkit's
    HWA: the model learns weights that tolerate weight noise; evaluation stays noise-free.
    """
    from hwsim.checkpoint import save_checkpoint
    from hwsim.data import load_dataset
    from hwsim.errors import ConfigError
    from hwsim.models import check_arch
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import not_learned_warning, train
    from hwsim.util.runtime import check_writable, file_stem, resolve_compute_device

    if preset is not None:
        raise ConfigError("--device names a device preset (hwsim convert/infer); to choose where "
                          f"to train, use --compute-device {preset}")
    check_arch(arch, bn)
    resolve_compute_device(compute_device)
    hwa = hwa_suffix(hwa_noise)
    out = out or Path(f"{file_stem(arch)}{'' if bn else '-nobn'}-{file_stem(dataset)}{hwa}.pt")
    check_writable(out, what="--out")  # before training, not after
    data = load_dataset(dataset, data_dir)
    config = TrainConfig(arch=arch, bn=bn, dataset=dataset, epochs=epochs, batch_size=batch_size,
                         lr=lr, grad_clip=grad_clip, weight_decay=weight_decay, seed=seed,
                         train_subset=train_subset, hwa_noise=hwa_noise, hwa_clip=hwa_clip,
                         init=None if init is None else str(init))
    result = train(config, data, compute_device=compute_device)
    save_checkpoint(result.checkpoint, out)
    how = f" hardware-aware (noise {hwa_noise:g} x max|W|)" if hwa_noise else ""
    what = f"{arch} {'with' if bn else 'without'} BN on {dataset}"
    click.echo(f"{what}{how}: test accuracy {100 * result.test_accuracy:.2f}% after {epochs} "
               f"epoch(s) in {result.seconds:.0f} s -> {out}")
    warning = not_learned_warning(
        what, result.test_accuracy, data.num_classes,
        fix="train it longer (--epochs) or with another learning rate (--lr, e.g. half)")
    if warning:
        click.echo(warning, err=True)


# ----------------------------------------------------------------------------- devices


@cli.group("devices", invoke_without_command=True)
@click.pass_context
def devices_cmd(ctx) -> None:
    """List the device presets (device_configs/*.yaml)."""
    if ctx.invoked_subcommand is not None:
        return
    from hwsim.analog.presets import list_presets

    for name in list_presets():
        p = load_preset(name)
        m = p.mapping
        click.echo(f"{name:<18} {p.description}")
        click.echo(f"{'':<18} mapping: {m.label}; tiles of at most "
                   f"{m.max_input_size} inputs x {m.max_output_size} outputs")
        click.echo(f"{'':<18} source: {p.source}")


@devices_cmd.command("show")
@click.argument("preset")
def devices_show_cmd(preset: str) -> None:
    """Print the resolved parameters of PRESET (a name or a YAML path)."""
    import yaml


    p = load_preset(preset)
    click.echo(yaml.safe_dump(p.to_dict(), sort_keys=False, width=100).rstrip())


# ----------------------------------------------------------------------------- convert

@cli.command("convert")
@add_options(model_options)
@click.option("--dataset", default=None,
              help="Dataset of a checkpoint from elsewhere (with --arch).")
@click.option("--device", "device", default="pcm", show_default=True,
              help="Device preset: a name from 'hwsim devices' or a YAML path.")
@click.option("--bn", "bn_mode", default="keep", show_default=True,
              type=click.Choice(["keep", "fold", "recal"]),
              help="keep: BN stays digital; fold: BN folded into the conv weights first; "
                   "recal: BN stays digital and its statistics are re-estimated on each "
                   "simulated chip at inference (see 'hwsim infer --help').")
@click.option("--eta", type=SettingType("eta"), default=None,
              help="Weight-noise level for the gaussian presets (overrides the preset's).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Analog checkpoint path [default: MODEL-PRESET-BN.pt].")
def convert_cmd(model_path, arch, dataset, device, bn_mode, eta, out) -> None:
    """Map a trained model onto analog tiles of a device preset (writes an analog checkpoint)."""
    from hwsim.inference.analog import convert_file
    from hwsim.util.runtime import check_writable

    preset = preset_of(device, eta)
    out = out or model_path.with_name(f"{model_path.stem}-{preset.name}-{bn_mode}.pt")
    check_writable(out, what="--out")
    conv = convert_file(model_path, preset, bn_mode, out, arch=arch, dataset=dataset)
    if conv.note:
        click.echo(conv.note)
    c = conv.checkpoint
    if c.test_accuracy is None:
        click.echo(f"{model_path} comes from elsewhere and records no test accuracy: hwsim "
                   f"infer measures it on {c.dataset} before the analog results")
    click.echo(f"{c.arch} ({'BN ' + c.bn_mode if c.bn else 'no BN'}) on preset {preset.name}"
               f" -> {out}")


# ----------------------------------------------------------------------------- infer


@cli.command("infer")
@add_options(model_options)
@click.option("--device", "device", default=None,
              help="Device preset, to convert a digital checkpoint on the fly.")
@click.option("--bn", "bn_mode", default=None, type=click.Choice(["keep", "fold", "recal"]),
              help="BN mode when converting on the fly [default: keep]. recal: after each "
                   "chip is programmed (and drifted to each time), reset the BN statistics "
                   "and re-estimate them over training images forwarded through the chip.")
@calib_size_option("Training images for BN recalibration (BN mode recal only): a fixed "
                   "sample drawn with --seed [default: 512].")
@eta_option
@times_option("1s,1h,1d,1y", "Inference times: comma-separated, e.g. 1s,1h,1d,1w,1y or "
                             "seconds.")
@repeats_option(10, "Monte-Carlo repeats (independent chips).")
@seed_option
@add_options(data_options)
@click.option("--test-subset", type=SettingType("test_subset"), default=None,
              help="Evaluate on the first N test images only [default: all].")
@click.option("--engine", default=None,
              help="Simulation engine: fast, aihwkit (reference, seedable torch tiles) or "
                   "aihwkit-cpp (C++ tiles, not seedable) [default: fast].")
@batch_size_option
@compute_device_option("Where to run.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every (t, repeat) result with its metadata (.json or .csv).")
def infer_cmd(model_path, arch, device, bn_mode, calib_size, eta, times, repeats, seed, dataset,
              data_dir, test_subset, engine, batch_size, compute_device, out) -> None:
    """Program analog chips, drift them to each time and measure test accuracy."""
    from hwsim.checkpoint import load_checkpoint
    from hwsim.data import load_dataset
    from hwsim.engine import DEFAULT_ENGINE
    from hwsim.errors import ConfigError
    from hwsim.inference.chip import check_dataset
    from hwsim.inference.montecarlo import InferSettings, run_inference
    from hwsim.inference.results import check_results_path, format_table, write_results
    from hwsim.training.loop import not_learned_warning
    from hwsim.util.timefmt import parse_times

    if out is not None:
        check_results_path(out)  # before the run, not after it
    settings = InferSettings(times=tuple(parse_times(times, "--t-inference")), repeats=repeats,
                             seed=seed, test_subset=test_subset, engine=engine or DEFAULT_ENGINE,
                             batch_size=batch_size, calib_size=calib_size)
    ckpt = load_checkpoint(model_path, arch=arch, dataset=dataset)
    if ckpt.kind == "analog" and (device is not None or bn_mode is not None or eta is not None):
        raise ConfigError(
            f"{model_path} is already converted (preset {ckpt.preset['name']!r}, BN "
            f"{ckpt.bn_mode}): drop --device/--bn/--eta, or give the digital checkpoint")
    if ckpt.kind == "digital" and device is None:
        raise ConfigError(f"{model_path} is a digital checkpoint: name a device preset with "
                          "--device (e.g. --device pcm)")
    mode = ckpt.bn_mode if ckpt.kind == "analog" else bn_mode or "keep"
    if calib_size is not None and mode != "recal":
        raise ConfigError(f"--calib-size applies to BN mode recal only (this run's BN mode is "
                          f"{mode})")
    check_dataset(ckpt, dataset or ckpt.dataset)
    data = load_dataset(dataset or ckpt.dataset, data_dir)
    result = run_inference(ckpt, data, settings, compute_device=compute_device,
                           preset=preset_of(device, eta) if device else None, bn_mode=bn_mode)
    if result.note:
        click.echo(result.note)
    if ckpt.test_accuracy is None:  # from elsewhere: nobody has checked that it learned
        click.echo(f"{model_path} records no test accuracy: measured here, digital "
                   f"{100 * result.digital_accuracy:.2f}% on {result.meta['test_split']}")
        warning = not_learned_warning(
            f"{ckpt.arch} from {model_path.name}", result.digital_accuracy, data.num_classes,
            fix="check --arch and --dataset, and that the checkpoint holds trained weights")
        if warning:
            click.echo(warning, err=True)
    click.echo(format_table(result))
    click.echo(f"({result.seconds:.1f} s)")
    if out:
        write_results(result, out)
        click.echo(f"results -> {out}")


