"""hwsim study run/list/status and hwsim report."""

from __future__ import annotations

from pathlib import Path

import click

from hwsim.cli.group import cli
from hwsim.cli.options import (
    SettingType,
    compute_device_option,
)

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
@compute_device_option("Where to train and infer.")
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
@click.option("--gpus-per-task", type=SettingType("gpus_per_task"), default=None,
              help="GPUs each Ray task asks for (a fraction shares a GPU) [default: 1 when "
                   "the study runs on CUDA and the cluster has GPUs, else 0].")
@click.option("--cpus-per-task", type=SettingType("cpus_per_task"), default=None,
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
    check_writable(out, folder=True, what="--out")
    runner = create_executor(executor, address=address, gpus_per_task=gpus_per_task,
                             cpus_per_task=cpus_per_task,
                             compute_device=compute_device)
    try:
        run = run_study(study, out, engine=engine, compute_device=compute_device, executor=runner,
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

    check_writable(out or run_dir, folder=True, what="--out")

    for path in write_report(run_dir, tuple(f.strip() for f in formats.split(",") if f.strip()),
                             out):
        click.echo(f"report -> {path}")
