"""The ``hwsim`` command line: thin click commands over the library.

Each command parses its options, calls one library function and prints. Every
:class:`~hwsim.errors.HwsimError` (and click's own usage errors) becomes one line on stderr
and a non-zero exit code; Ctrl-C becomes "interrupted" and exit code 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hwsim import __version__
from hwsim.errors import HwsimError


class HwsimGroup(click.Group):
    """A click group that reports errors in one line instead of a traceback or usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as e:
            hint = ""
            if isinstance(e, click.UsageError) and e.ctx is not None:
                hint = f" (see '{e.ctx.command_path} --help')"
            _fail(e.format_message() + hint, e.exit_code)
        except HwsimError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=HwsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwsim")
def cli() -> None:
    """hwsim: how much accuracy a trained CNN loses on analog in-memory hardware,
    with and without BatchNorm."""


def main() -> None:
    cli()


def _compute_device_option(help_text: str):
    """``--compute-device auto|cpu|cuda``: the torch device (``--device`` is a preset)."""
    return click.option("--compute-device", default="auto", show_default=True,
                        type=click.Choice(["auto", "cpu", "cuda"]),
                        help=help_text + " auto: CUDA when present, else the CPU.")


# ----------------------------------------------------------------------------- models


@cli.command("models")
def models_cmd() -> None:
    """List the architectures with parameter count and number of BN layers."""
    from hwsim.models import count_bn_layers, count_parameters, create_model, list_models

    click.echo(f"{'arch':<10} {'params (BN)':>12} {'params (no BN)':>15} {'BN layers':>10}")
    for name in list_models():
        with_bn = create_model(name, bn=True, num_classes=10, in_channels=3)
        without = create_model(name, bn=False, num_classes=10, in_channels=3)
        click.echo(f"{name:<10} {count_parameters(with_bn):>12,} {count_parameters(without):>15,}"
                   f" {count_bn_layers(with_bn):>10}")
    click.echo("(parameter counts for 10 classes and 3x32x32 inputs)")


# ----------------------------------------------------------------------------- train


@cli.command("train")
@click.option("--arch", default="cnn", show_default=True,
              help="Architecture (see 'hwsim models').")
@click.option("--bn/--no-bn", default=True, show_default=True,
              help="With BatchNorm after every conv, or none at all.")
@click.option("--dataset", default="fashion-mnist", show_default=True,
              help="fashion-mnist, cifar10, cifar100 or digits.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the dataset (default: ~/.cache/hwsim/data, and Debian's "
                   "/usr/share/datasets for Fashion-MNIST).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Peak learning rate (linear warm-up, cosine decay).")
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, help="Cap on the global gradient norm per step.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-subset", type=click.IntRange(min=1), default=None,
              help="Train on the first N training examples only.")
@click.option("--hwa-noise", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="ETA",
              help="Hardware-aware training: on every training forward add fresh Gaussian "
                   "noise of std ETA x max|W| to each conv/linear layer's weights (aihwkit's "
                   "additive-normal modifier; its HWA tutorial uses 0.06). 0: off.")
@click.option("--hwa-clip", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="K",
              help="After every optimiser step clip each conv/linear layer's weights to "
                   "+-K x std(W) (aihwkit's layer-Gaussian clipping; its tutorial uses 2).")
@click.option("--init", "init", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="CKPT",
              help="Fine-tune from this digital checkpoint (same architecture, BN and "
                   "dataset) instead of a random initialisation.")
@_compute_device_option("Where to train.")
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
    from hwsim.util.runtime import check_writable, resolve_compute_device

    if preset is not None:
        raise ConfigError("--device names a device preset (hwsim convert/infer); to choose where "
                          f"to train, use --compute-device {preset}")
    check_arch(arch)
    resolve_compute_device(compute_device)
    hwa = f"-hwa{hwa_noise:g}" if hwa_noise else ""
    out = out or Path(f"{arch}{'' if bn else '-nobn'}-{dataset}{hwa}.pt")
    check_writable(out)  # before training, not after
    data = load_dataset(dataset, data_dir)
    config = TrainConfig(arch=arch, bn=bn, dataset=dataset, epochs=epochs, batch_size=batch_size,
                         lr=lr, grad_clip=grad_clip, weight_decay=weight_decay, seed=seed,
                         train_subset=train_subset, hwa_noise=hwa_noise, hwa_clip=hwa_clip,
                         init=None if init is None else str(init))
    result = train(config, data, device=compute_device)
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
    from hwsim.analog.presets import list_presets, load_preset

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

    from hwsim.analog.presets import load_preset

    p = load_preset(preset)
    click.echo(yaml.safe_dump(p.to_dict(), sort_keys=False, width=100).rstrip())


# ----------------------------------------------------------------------------- convert

_model_opts = [
    click.option("--model", "model_path", required=True,
                 type=click.Path(dir_okay=False, path_type=Path),
                 help="A checkpoint from 'hwsim train' (or a plain state_dict with --arch and "
                      "--dataset)."),
    click.option("--arch", default=None, help="Architecture of a plain state_dict."),
]


def _add(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _preset(device: str, eta: float | None):
    from hwsim.analog.presets import load_preset

    p = load_preset(device)
    return p.with_eta(eta) if eta is not None else p


@cli.command("convert")
@_add(_model_opts)
@click.option("--dataset", default=None, help="Dataset of a plain state_dict.")
@click.option("--device", "device", default="pcm", show_default=True,
              help="Device preset: a name from 'hwsim devices' or a YAML path.")
@click.option("--bn", "bn_mode", default="keep", show_default=True,
              type=click.Choice(["keep", "fold", "recal"]),
              help="keep: BN stays digital; fold: BN folded into the conv weights first; "
                   "recal: BN stays digital and its statistics are re-estimated on each "
                   "simulated chip at inference (see 'hwsim infer --help').")
@click.option("--eta", type=float, default=None,
              help="Weight-noise level for the gaussian presets (overrides the preset's).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Analog checkpoint path [default: MODEL-PRESET-BN.pt].")
def convert_cmd(model_path, arch, dataset, device, bn_mode, eta, out) -> None:
    """Map a trained model onto analog tiles of a device preset (writes an analog checkpoint)."""
    from hwsim.inference.analog import convert_file
    from hwsim.util.runtime import check_writable

    preset = _preset(device, eta)
    out = out or model_path.with_name(f"{model_path.stem}-{preset.name}-{bn_mode}.pt")
    check_writable(out)
    conv = convert_file(model_path, preset, bn_mode, out, arch=arch, dataset=dataset)
    if conv.note:
        click.echo(conv.note)
    c = conv.checkpoint
    click.echo(f"{c.arch} ({'BN ' + c.bn_mode if c.bn else 'no BN'}) on preset {preset.name}"
               f" -> {out}")


# ----------------------------------------------------------------------------- infer


@cli.command("infer")
@_add(_model_opts)
@click.option("--device", "device", default=None,
              help="Device preset, to convert a digital checkpoint on the fly.")
@click.option("--bn", "bn_mode", default=None, type=click.Choice(["keep", "fold", "recal"]),
              help="BN mode when converting on the fly [default: keep]. recal: after each "
                   "chip is programmed (and drifted to each time), reset the BN statistics "
                   "and re-estimate them over training images forwarded through the chip.")
@click.option("--calib-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Training images for BN recalibration (BN mode recal only): a fixed "
                   "sample drawn with --seed [default: 512].")
@click.option("--eta", type=float, default=None, help="Weight-noise level (gaussian presets).")
@click.option("--t-inference", "times", default="1s,1h,1d,1y", show_default=True,
              help="Inference times: comma-separated, e.g. 1s,1h,1d,1w,1y or seconds.")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Monte-Carlo repeats (independent chips).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dataset", default=None, help="Dataset [default: the checkpoint's].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--test-subset", type=click.IntRange(min=1), default=None,
              help="Evaluate on the first N test images only [default: all].")
@click.option("--engine", default=None,
              help="Simulation engine: fast, aihwkit (reference, seedable torch tiles) or "
                   "aihwkit-cpp (C++ tiles, not seedable) [default: fast].")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@_compute_device_option("Where to run.")
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
    from hwsim.util.timefmt import parse_times

    if out is not None:
        check_results_path(out)  # before the run, not after it
    settings = InferSettings(times=tuple(parse_times(times)), repeats=repeats, seed=seed,
                             test_subset=test_subset, engine=engine or DEFAULT_ENGINE,
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
                           preset=_preset(device, eta) if device else None, bn_mode=bn_mode)
    if result.note:
        click.echo(result.note)
    click.echo(format_table(result))
    click.echo(f"({result.seconds:.1f} s)")
    if out:
        write_results(result, out)
        click.echo(f"results -> {out}")


# ----------------------------------------------------------------------------- study / report


@cli.group("study")
def study_cmd() -> None:
    """Run a whole grid from a study file (experiments/*.yaml), resumably."""


@study_cmd.command("run")
@click.argument("study_file", metavar="STUDY")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (checkpoints/, results.sqlite, report) [default: runs/NAME].")
@click.option("--engine", default=None,
              help="Override the study's engine (fast, aihwkit, aihwkit-cpp).")
@_compute_device_option("Where to train and infer.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write the HTML and Markdown report when the run completes.")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray"]),
              help="local: in this process; ray: as Ray tasks on a Ray cluster "
                   "(pip install 'hwsim[ray]').")
@click.option("--address", default=None,
              help="Ray cluster to use (HOST:PORT of its head, or auto for the one running "
                   "here) [default: $RAY_ADDRESS, else a local Ray instance started for the "
                   "run].")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=None,
              help="GPUs each Ray task asks for (a fraction shares a GPU) [default: 1 when "
                   "the study runs on CUDA and the cluster has GPUs, else 0].")
@click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True), default=None,
              help="CPUs each Ray task asks for; torch uses as many threads [default: 1 with "
                   "a GPU, else the threads torch uses here].")
def study_run_cmd(study_file, out, engine, compute_device, report, executor, address,
                  gpus_per_task, cpus_per_task) -> None:
    """Train, convert and infer every cell of STUDY not yet in the store, then report.

    STUDY is a study file, or the name of a study shipped with hwsim (e.g. quick; see
    'hwsim study list'). Interrupt it at any time (Ctrl-C, or even kill -9): rerunning the
    same command resumes where it stopped, and a changed study file computes only what is new.
    With --executor ray the same study runs on a Ray cluster, with the same results; this
    process stays the only writer of the run folder.
    """
    from hwsim.study import format_status, load_study, run_study
    from hwsim.study.executors import create_executor
    from hwsim.util.runtime import check_writable

    study = load_study(study_file)
    out = out or Path("runs") / study.name
    check_writable(out, folder=True)
    runner = create_executor(executor, address=address, gpus_per_task=gpus_per_task,
                             cpus_per_task=cpus_per_task, device=compute_device)
    try:
        run = run_study(study, out, engine=engine, device=compute_device, executor=runner,
                        log=lambda msg: click.echo(msg, err=True))
    finally:
        runner.close()
    click.echo(format_status(run.stages))
    click.echo(f"{run.computed_cells} cells computed, {run.skipped_cells} resumed from the "
               f"store, {run.trained} model(s) trained, {run.cached_models} cached; "
               f"{run.seconds:.0f} s -> {out}")
    if report:
        from hwsim.report import write_report

        for path in write_report(out):
            click.echo(f"report -> {path}")


@study_cmd.command("list")
def study_list_cmd() -> None:
    """List the studies shipped with hwsim (run one by name: hwsim study run NAME)."""
    from hwsim.study import load_study, shipped_studies

    for name in shipped_studies():
        study = load_study(name)
        click.echo(f"{name:<16} {' '.join(study.description.split())}")
        click.echo(f"{'':<16} {study.path}")


@study_cmd.command("status")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def study_status_cmd(run_dir) -> None:
    """Show done/total per stage of the study run in RUN_DIR."""
    from hwsim.study import format_status, status_from_run_dir

    study, stages = status_from_run_dir(run_dir)
    click.echo(f"study {study.name} ({study.path})")
    click.echo(format_status(stages))


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "formats", default="html,md", show_default=True,
              help="Comma-separated: html, md.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report [default: RUN_DIR].")
def report_cmd(run_dir, formats, out) -> None:
    """Write the comparison report of a study run from its results store alone."""
    from hwsim.report import write_report
    from hwsim.util.runtime import check_writable

    check_writable(out or run_dir, folder=True)

    for path in write_report(run_dir, tuple(f.strip() for f in formats.split(",") if f.strip()),
                             out):
        click.echo(f"report -> {path}")
