"""A study's inference stage end to end: wall time and cells per second, for one or more
code trees, beside its floor (not a test).

Each round runs, for each code tree, ``python -m hwsim study run STUDY --no-report`` in a new
run folder that holds only the study's trained checkpoints (so nothing is trained: the train
stage only re-evaluates the cached models, then every cell is computed), the trees
interleaved round by round (timings on a shared machine drift by up to 40% between
processes; read the ratios of one run). The cells of every round of one tree must be
identical (the study is deterministic for a given seed and thread count).

The floor is what the same cells would cost if a chip were free and the analog forward
cost what the digital one does: per model, the digital evaluation of its test subset times
its number of cells, plus, per recalibrated cell, one BN recalibration of the digital model
on the calibration images (median of 3 timings each, this process, current code).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_study.py --checkpoints runs/quick/checkpoints
        [--study quick] [--code before=../wt-base] [--code after=.] [--rounds 3]
        [--no-floor] [--json out.json]

The checkpoints must be the study's own (names with the study's model hashes: a run of
``hwsim study run STUDY`` leaves them in ``RUN_DIR/checkpoints``). Measured: the README's
Performance section.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_stage(code: Path, study: str, checkpoints: Path, work: Path) -> tuple[float, list]:
    """Wall seconds of one inference stage with the hwsim of ``code``, and its cells."""
    if work.exists():
        shutil.rmtree(work)
    (work / "checkpoints").mkdir(parents=True)
    for f in checkpoints.glob("*.pt"):
        shutil.copy(f, work / "checkpoints" / f.name)
    env = dict(os.environ, PYTHONPATH=str(code.resolve()))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hwsim", "study", "run", study, "--no-report",
                    "--out", str(work)], env=env, check=True, cwd=code,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with sqlite3.connect(work / "results.sqlite") as db:
        cells = sorted(db.execute("select key, accuracy from cells").fetchall())
    return seconds, cells


def floor(study_name: str, checkpoints: Path) -> dict:
    """The digital floor of the study's cells (seconds), with its parts (measured with the
    allocator tuned as the ``hwsim`` command tunes it: :mod:`hwsim.util.memory`)."""
    from hwsim.util.memory import keep_freed_memory

    keep_freed_memory()
    import torch

    from hwsim.analog.recalibrate import calibration_sample, recalibrate_bn
    from hwsim.checkpoint import load_checkpoint
    from hwsim.data import load_dataset
    from hwsim.inference.evaluate import evaluate
    from hwsim.study.plan import plan_study
    from hwsim.study.spec import load_study
    from hwsim.util.seeds import derive_seed

    study = load_study(study_name)
    plan = plan_study(study)
    cells: dict[str, int] = {}
    recal_cells: dict[str, int] = {}
    calib: dict[str, int] = {}
    for job in plan.infers:
        name = job.model.checkpoint_name
        n = job.repeats * len(job.times)
        cells[name] = cells.get(name, 0) + n
        if job.bn_mode == "recal":
            recal_cells[name] = recal_cells.get(name, 0) + n
            calib[name] = job.calib_size
    data_of = {job.checkpoint_name: job for job in plan.models}
    datasets: dict = {}
    eval_s = recal_s = 0.0
    per_model = {}
    for name, n in cells.items():
        job = data_of[name]
        ds = job.key.dataset
        if ds not in datasets:
            datasets[ds] = load_dataset(ds, study.data_dir)
        data = datasets[ds]
        ckpt = load_checkpoint(checkpoints / name)
        model = ckpt.build_model()
        x, y = data.test_subset(job.test_subset)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            evaluate(model, x, y, ckpt.normalization, device=torch.device("cpu"))
            times.append(time.perf_counter() - t0)
        e = statistics.median(times)
        r = 0.0
        if name in recal_cells:
            images = calibration_sample(data, calib[name], derive_seed(0, "calibration-sample"))
            times = [recalibrate_bn(copy.deepcopy(model), images, ckpt.normalization,
                                    batch_size=500, device=torch.device("cpu"), seed=0)
                     for _ in range(3)]
            r = statistics.median(times)
        eval_s += e * n
        recal_s += r * recal_cells.get(name, 0)
        per_model[name] = {"cells": n, "eval_ms": 1000 * e, "recal_ms": 1000 * r}
    return {"eval_s": eval_s, "recal_s": recal_s, "total_s": eval_s + recal_s,
            "cells": sum(cells.values()), "models": per_model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default="quick")
    ap.add_argument("--checkpoints", required=True, type=Path)
    ap.add_argument("--code", action="append", default=[],
                    help="NAME=PATH of a checkout to time (repeatable; default: this=.)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    codes = [c.split("=", 1) for c in args.code] or [["this", "."]]
    results: dict[str, dict] = {name: {"seconds": [], "cells": None} for name, _ in codes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, path in codes:
                seconds, cells = run_stage(Path(path), args.study, args.checkpoints,
                                           Path(tmp) / name)
                res = results[name]
                if res["cells"] is not None and cells != res["cells"]:
                    raise SystemExit(f"{name}: round {r + 1}'s cells differ from round 1's")
                res["cells"] = cells
                res["seconds"].append(seconds)
                print(f"round {r + 1} {name}: {seconds:.1f} s, {len(cells)} cells", flush=True)
    out = {"study": args.study, "rounds": args.rounds, "codes": {}}
    for name, res in results.items():
        if not res["seconds"]:
            continue
        med = statistics.median(res["seconds"])
        out["codes"][name] = {"seconds": res["seconds"], "median_s": med,
                              "cells": len(res["cells"]),
                              "cells_per_s": len(res["cells"]) / med}
    if out["codes"]:
        first = next(iter(out["codes"].values()))
        print(f"\n{'code':<12}{'runs (s)':<28}{'median s':>10}{'cells/s':>10}"
              f"{'x ' + codes[0][0]:>12}")
        for name, row in out["codes"].items():
            runs = ", ".join(f"{s:.0f}" for s in row["seconds"])
            print(f"{name:<12}{runs:<28}{row['median_s']:>10.1f}{row['cells_per_s']:>10.2f}"
                  f"{first['median_s'] / row['median_s']:>12.2f}")
    if len(codes) > 1:  # which trees compute the same cells (the same chip stream)
        groups: list[list[str]] = []
        for name, _ in codes:
            for g in groups:
                if results[g[0]]["cells"] == results[name]["cells"]:
                    g.append(name)
                    break
            else:
                groups.append([name])
        out["same_cells"] = groups
        print("\nidentical cells: " + "; ".join(" = ".join(g) for g in groups))
    if not args.no_floor:
        f = floor(args.study, args.checkpoints)
        out["floor"] = f
        print(f"\nfloor: {f['cells']} cells, digital evaluation {f['eval_s']:.1f} s + "
              f"BN recalibrations {f['recal_s']:.1f} s = {f['total_s']:.1f} s "
              f"({f['cells'] / f['total_s']:.2f} cells/s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
