"""Wall time of a study's inference stage under ``--executor local`` and ``--executor ray``
on this machine (not a test).

On one machine Ray cannot speed anything up when each task already uses every core; what
this measures is its overhead: starting a local Ray instance and its worker processes,
shipping checkpoints through the object store, one task per (model, BN mode, preset, eta,
repeat), and returning the cells to the driver, which commits them.

The study's models are trained once (with the local executor) into RUN_DIR/base, or taken
from there if present (copy ``runs/quick/checkpoints`` there to skip the training). Each
round then copies that base without its cells and runs the inference stage twice, once per
executor, alternating which goes first, so that the load of a shared machine falls on both
alike; the medians over the rounds are reported. Every run's cells are checked equal.

    .venv/bin/python benchmarks/bench_executors.py [--study quick]
        [--run-dir runs/bench-executors] [--repeats 2] [--rounds 3] [--cpus-per-task C]
        [--arch cnn] [--train-subset N] [--epochs E] [--json out.json]

``--repeats R`` times the first R Monte-Carlo repeats of every (model, BN mode, preset, eta)
(every kind of unit the study has, R/repeats of its cells); 0 keeps the study's.
``--arch A [--arch B]`` keeps those architectures only. ``--train-subset N --epochs E``
train the models on less (to save time on a busy machine): the inference stage then does the
same work per cell on other weights (only the iterations of the engine's bound management
depend on the weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cells(run_dir: Path) -> dict:
    with sqlite3.connect(run_dir / "results.sqlite") as con:
        return dict(con.execute("SELECT key, accuracy FROM cells").fetchall())


def fresh_copy(base: Path, run_dir: Path) -> None:
    """``base`` (checkpoints and model records) without any cell."""
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(base, run_dir)
    with sqlite3.connect(run_dir / "results.sqlite") as con:
        con.execute("DELETE FROM cells")


def run_once(kind: str, study, run_dir: Path, cpus_per_task: float | None) -> dict:
    """One run of the study into ``run_dir``; wall times of the whole command (Ray started and
    stopped included) and of its inference stage."""
    from hwsim.study import run_study
    from hwsim.study.executors import LocalExecutor, RayExecutor

    marks = {}

    def log(msg: str) -> None:
        if msg.startswith("[infer]"):
            marks["infer"] = time.perf_counter()

    load = os.getloadavg()[0]
    start = time.perf_counter()
    executor = (LocalExecutor() if kind == "local"
                else RayExecutor.connect(None, cpus_per_task=cpus_per_task))
    connected = time.perf_counter()
    try:
        run = run_study(study, run_dir, executor=executor, progress=False, log=log)
    finally:
        done = time.perf_counter()
        executor.close()
    end = time.perf_counter()
    return {"executor": kind, "cells": run.computed_cells, "stage_s": done - marks["infer"],
            "total_s": end - start, "ray_start_s": connected - start,
            "task_cpus": getattr(executor, "cpus", None), "load_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="quick")
    parser.add_argument("--run-dir", default="runs/bench-executors", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus-per-task", type=float, default=None)
    parser.add_argument("--arch", action="append", default=None)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from hwsim.study import load_study, plan_study, run_study

    study = load_study(args.study)
    if args.repeats:
        study = dataclasses.replace(study, repeats=min(args.repeats, study.repeats))
    if args.arch:
        study = dataclasses.replace(study, architectures=args.arch)
    training = {k: v for k, v in (("train_subset", args.train_subset), ("epochs", args.epochs))
                if v is not None}
    if training:
        study = dataclasses.replace(study, datasets=[dataclasses.replace(d, **training)
                                                     for d in study.datasets])
    base = args.run_dir / "base"
    print(f"preparing {base} (training what is missing, with the local executor)", flush=True)
    run_study(study, base, progress=False, log=lambda m: print(m, flush=True))
    wanted = {c.id for job in plan_study(study).infers for c in job.cells()}
    reference = {k: v for k, v in cells(base).items() if k in wanted}
    print(f"{len(reference)} cells per run; {args.rounds} round(s), alternating order",
          flush=True)

    runs = []
    for i in range(args.rounds):
        for kind in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            run_dir = args.run_dir / kind
            fresh_copy(base, run_dir)
            r = run_once(kind, study, run_dir, args.cpus_per_task) | {"round": i}
            assert cells(run_dir) == reference, f"{kind} round {i}: cells differ"
            runs.append(r)
            print(f"round {i} {kind:>5}: inference stage {r['stage_s']:7.1f} s, whole run "
                  f"{r['total_s']:7.1f} s (Ray start {r['ray_start_s']:.1f} s), load "
                  f"{r['load_before']:.1f}", flush=True)

    if not runs:
        return

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["executor"] == kind)

    summary = {k: {key: median(k, key) for key in ("stage_s", "total_s")}
               for k in ("local", "ray")}
    stage = summary["ray"]["stage_s"] / summary["local"]["stage_s"] - 1
    total = summary["ray"]["total_s"] / summary["local"]["total_s"] - 1
    print(f"\nmedians over {args.rounds} round(s), {len(reference)} cells each:")
    print("| executor | inference stage (s) | whole run (s) |\n|---|---|---|")
    for k in ("local", "ray"):
        print(f"| {k} | {summary[k]['stage_s']:.1f} | {summary[k]['total_s']:.1f} |")
    print(f"Ray overhead: {100 * stage:+.1f}% on the inference stage, {100 * total:+.1f}% on "
          "the whole run (starting and stopping a local Ray instance included)")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary,
                                         "overhead_stage": stage, "overhead_total": total,
                                         "cells": len(reference)}, indent=1))


if __name__ == "__main__":
    main()
