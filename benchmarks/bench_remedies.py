"""Cost of the remedies (not a test): an HWA training epoch against a plain one, and one BN
recalibration against one evaluation of the test set.

HWA: one-epoch ``train()`` runs with ``hwa_noise`` 0 and ETA (and ``hwa_clip``), interleaved
in one process (plain, HWA, plain, HWA ...), the test split cut to 10 images so that the time
is the epoch's; the ratio of the medians is reported. On a shared machine, --cpu-time
measures the process's CPU time instead of wall time (with --threads 1 it is the work done,
unaffected by other processes waiting for the same cores). Recalibration: on one programmed chip,
``recalibrate_bn`` over CALIB training images against ``evaluate`` over the test split,
interleaved; ratio of medians and seconds of each.

    .venv/bin/python benchmarks/bench_remedies.py [--dataset digits] [--arch cnn]
        [--data-dir DIR] [--batch-size 32] [--train-subset N] [--rounds 5] [--eta 0.06] [--clip 2]
        [--preset pcm] [--engine fast] [--calib 512] [--compute-device cpu] [--threads N]
        [--cpu-time] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch


def hwa_ratio(args, data) -> dict:
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import train

    small_test = dataclasses.replace(data, test_x=data.test_x[:10], test_y=data.test_y[:10])
    base = TrainConfig(args.arch, True, args.dataset, epochs=1, batch_size=args.batch_size,
                       train_subset=args.train_subset)
    configs = {"plain": base,
               "hwa": dataclasses.replace(base, hwa_noise=args.eta, hwa_clip=args.clip)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    train(base, small_test, device=args.compute_device, progress=False)  # warm-up
    clock = time.process_time if args.cpu_time else time.perf_counter
    for _ in range(args.rounds):
        for name, cfg in configs.items():
            start = clock()
            train(cfg, small_test, device=args.compute_device, progress=False)
            times[name].append(clock() - start)
    plain, hwa = statistics.median(times["plain"]), statistics.median(times["hwa"])
    return {"plain_epoch_s": plain, "hwa_epoch_s": hwa, "ratio": hwa / plain, "times": times}


def recal_ratio(args, data) -> dict:
    from hwsim.analog.presets import load_preset
    from hwsim.analog.recalibrate import calibration_sample, recalibrate_bn
    from hwsim.engine import create_engine
    from hwsim.inference.evaluate import evaluate
    from hwsim.models import create_model
    from hwsim.util.runtime import resolve_compute_device

    dev = resolve_compute_device(args.compute_device)
    model = create_model(args.arch, bn=True, num_classes=data.num_classes,
                         in_channels=data.in_channels, input_size=data.input_size).eval()
    engine = create_engine(args.engine, model, load_preset(args.preset), dev)
    engine.program(0)
    images = calibration_sample(data, args.calib, 0)
    recal, ev = [], []
    clock = time.process_time if args.cpu_time else time.perf_counter
    for i in range(args.rounds + 1):
        start = clock()
        recalibrate_bn(engine.model, images, data.normalization, batch_size=500,
                       device=engine.device, seed=i)
        t_recal = clock() - start
        start = clock()
        evaluate(engine.model, data.test_x, data.test_y, data.normalization,
                 device=engine.device)
        t_eval = clock() - start
        if i:  # the first round warms up
            recal.append(t_recal)
            ev.append(t_eval)
    r, e = statistics.median(recal), statistics.median(ev)
    return {"recal_s": r, "eval_s": e, "ratio": r / e, "n_test": len(data.test_y),
            "calib": args.calib, "preset": args.preset, "engine": args.engine}


def main() -> None:
    from hwsim.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--eta", type=float, default=0.06)
    ap.add_argument("--clip", type=float, default=2.0)
    ap.add_argument("--preset", default="pcm")
    ap.add_argument("--engine", default="fast")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--compute-device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-time", action="store_true")
    ap.add_argument("--skip-hwa", action="store_true")
    ap.add_argument("--skip-recal", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    out = {"args": vars(args), "threads": torch.get_num_threads()}
    if not args.skip_hwa:
        out["hwa"] = hwa_ratio(args, data)
        h = out["hwa"]
        print(f"HWA epoch {args.arch} {args.dataset} (eta {args.eta}, clip {args.clip}): "
              f"{h['hwa_epoch_s']:.2f} s vs plain {h['plain_epoch_s']:.2f} s -> "
              f"ratio {h['ratio']:.3f}")
    if not args.skip_recal:
        out["recal"] = recal_ratio(args, data)
        r = out["recal"]
        print(f"recalibration {args.arch} {args.dataset} {args.preset}/{args.engine}, "
              f"{args.calib} images: {r['recal_s']:.3f} s; evaluation of {r['n_test']} test "
              f"images {r['eval_s']:.3f} s -> ratio {r['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
