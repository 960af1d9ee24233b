"""Cells per second of a study's inference stage, old chip path against new (not a test).

A cell is one (chip, time) accuracy: per Monte-Carlo repeat the inference stage programs a
chip, then per time drifts it, recalibrates its BN statistics (BN mode ``recal``) and
evaluates it on the test subset. This times, per model, preset and BN mode, the share of
each step beside the digital evaluation of the same images, for two chip paths of the fast
engine, interleaved round by round in ONE process (timings on a shared machine drift by up
to 40% between processes):

* ``old``: today's path before issue 17: aihwkit converts the model and programs and drifts
  its tiles, and the fast model is rebuilt from a deep copy of the digital model each time;
* ``new``: :mod:`hwsim.engine.chips` draws the chip on tensors for the whole model.

Models: the quick study's digits architectures (cnn, resnet20, resnet32, with BN), trained
here for a few epochs with hwsim's ``train`` unless ``--checkpoints DIR`` gives digital
checkpoints (``*.pt``). Medians of ``--rounds`` (3) repeats; times in ms.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cells.py [--checkpoints DIR]
        [--presets pcm,pcm-column,gaussian] [--bn-modes keep,recal] [--rounds 3]
        [--threads 2] [--json out.json]

Measured: see the README's Performance section (the table of the latest run, median of 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

TIMES = (1.0, 3600.0, 86400.0, 604800.0, 31536000.0)  # quick.yaml's 1s, 1h, 1d, 1w, 1y
ARCHS = ("cnn", "resnet20", "resnet32")


def checkpoints(directory: str | None, data):
    from hwsim.checkpoint import load_checkpoint
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import train

    if directory:  # the digits models among them (the test images are the digits')
        found = [load_checkpoint(p) for p in sorted(Path(directory).glob("*.pt"))]
        return [c for c in found if c.dataset == data.name]
    out = []
    for arch in ARCHS:
        result = train(TrainConfig(arch, True, "digits", epochs=3, batch_size=128, lr=0.05),
                       data, progress=False)
        out.append(result.checkpoint)
    return out


def legacy_engine(digital, preset):
    """The fast engine as it was: aihwkit's chips, a deep copy of the model per rebuild."""
    import torch

    from hwsim.engine.fast_engine import FastEngine

    class Legacy(FastEngine):
        def _install(self, states):
            self._base = None  # deep-copy the digital model again, as _rebuild did
            super()._install(states)

    return Legacy(digital, preset, torch.device("cpu")).use_reference_chips()


def time_repeat(engine, seed, x, y, norm, recal_images, digital) -> dict:
    """One repeat's steps, in ms: program, then per time drift, recal, eval (means)."""
    from hwsim.analog.recalibrate import recalibrate_bn
    from hwsim.inference.evaluate import evaluate
    from hwsim.util.seeds import derive_seed

    t0 = time.perf_counter()
    engine.program(derive_seed(seed, "program"))
    engine.model  # the chip's layers installed  # noqa: B018
    out = {"program": time.perf_counter() - t0, "drift": 0.0, "recal": 0.0, "eval": 0.0,
           "digital": 0.0}
    times = TIMES if engine.preset.time_dependent else (None,)
    for t in times:
        t0 = time.perf_counter()
        if t is not None:
            engine.drift(t, derive_seed(seed, "drift", t))
            engine.model  # noqa: B018
        t1 = time.perf_counter()
        if recal_images is not None:
            recalibrate_bn(engine.model, recal_images, norm, batch_size=500,
                           device=engine.device, seed=1)
        t2 = time.perf_counter()
        evaluate(engine.model, x, y, norm, batch_size=500)
        t3 = time.perf_counter()
        evaluate(digital, x, y, norm, batch_size=500)
        t4 = time.perf_counter()
        out["drift"] += t1 - t0
        out["recal"] += t2 - t1
        out["eval"] += t3 - t2
        out["digital"] += t4 - t3
    n = len(times)
    total = out["program"] + out["drift"] + out["recal"] + out["eval"]
    res = {k: 1e3 * (v / n if k != "program" else v) for k, v in out.items()}
    res["cells_per_s"] = n / total
    res["n_times"] = n
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument("--presets", default="pcm,pcm-column,gaussian")
    ap.add_argument("--bn-modes", default="keep,recal")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from hwsim.analog.presets import load_preset
    from hwsim.analog.recalibrate import calibration_sample
    from hwsim.data import load_dataset
    from hwsim.engine import create_engine
    from hwsim.inference.analog import to_analog

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    x, y = data.test_subset(None)
    recal_images = calibration_sample(data, 256, 0)
    rows = []
    for ckpt in checkpoints(args.checkpoints, data):
        for name in args.presets.split(","):
            for mode in args.bn_modes.split(","):
                if mode != "keep" and not ckpt.bn:
                    continue  # a BN-free model has nothing to fold or recalibrate
                analog = to_analog(ckpt, load_preset(name), mode).checkpoint
                digital = analog.build_model().eval()
                preset = load_preset(name)
                engines = {"old": legacy_engine(digital, preset),
                           "new": create_engine("fast", digital, preset, torch.device("cpu"))}
                recal = recal_images if mode == "recal" else None
                runs = {k: [] for k in engines}
                for r in range(args.rounds + 1):  # round 0 warms up (kernel, conversion)
                    for key, engine in engines.items():
                        res = time_repeat(engine, r, x, y, analog.normalization, recal,
                                          digital)
                        if r:
                            runs[key].append(res)
                for key in engines:
                    med = {k: statistics.median(run[k] for run in runs[key])
                           for k in runs[key][0]}
                    rows.append({"model": f"{ckpt.arch}", "preset": name, "bn_mode": mode,
                                 "path": key, **med})
                    print(_row(rows[-1]), flush=True)
    print()
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


HEADER = ("model", "preset", "bn", "path", "program", "drift/t", "recal/t", "eval/t",
          "digital/t", "(p+d)/eval", "cells/s")


def _row(r: dict) -> str:
    pd = (r["program"] / r["n_times"] + r["drift"]) / r["eval"]
    return (f"| {r['model']} | {r['preset']} | {r['bn_mode']} | {r['path']} | "
            f"{r['program']:.1f} | {r['drift']:.1f} | {r['recal']:.1f} | {r['eval']:.1f} | "
            f"{r['digital']:.1f} | {pd:.2f} | {r['cells_per_s']:.2f} |")


def _table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [_row(r) for r in rows]
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["preset"], r["bn_mode"]), {})[r["path"]] = r
    lines.append("")
    lines.append("new/old cells per second: " + ", ".join(
        f"{m}/{p}/{b} {v['new']['cells_per_s'] / v['old']['cells_per_s']:.2f}x"
        for (m, p, b), v in by.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
