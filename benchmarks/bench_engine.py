"""Speed and memory of the analog engines against the digital forward (not a test).

Times, in one run on one machine, the forward pass of a ResNet-20 (with BN, random weights,
BN in eval mode) on batches of 3x32x32 inputs: the digital model, aihwkit's C++ tiles
(``aihwkit-cpp``), aihwkit's torch tiles (``aihwkit``, with --torch-tile: slow) and hwsim's
fast engine, for the presets pcm, pcm-weights-only and gaussian. Each configuration runs in
its own process, so its peak memory (max RSS) is its own. Warm-up batches are excluded.

    .venv/bin/python benchmarks/bench_engine.py [--batch 500] [--batches 3] [--torch-tile]
        [--only fast:pcm ...] [--allocator hwsim|default] [--validate] [--json out.json]

By default each process keeps freed buffers for reuse, as the ``hwsim`` command does
(:mod:`hwsim.util.memory`); ``--allocator default`` times glibc's defaults, under which every
feature map above 32 MiB is mapped and faulted in afresh (on this project's virtual machines
30-50% of a digital forward at batch 500).

It also reports the fast engine's fused-kernel build: compiled once per machine into the
cache (timed here in a fresh cache directory), then loaded from it by every later process.

--validate adds the longer engine validation: a cnn trained on the digits dataset, 30
Monte-Carlo repeats per preset with the fast engine and with aihwkit's torch tiles (same
programmed chips), mean accuracy and 95% CI of each, and the time each took.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

CONFIGS = [
    ("digital", "-"),
    ("aihwkit-cpp", "pcm"),
    ("fast", "pcm"),
    ("aihwkit-cpp", "pcm-weights-only"),
    ("fast", "pcm-weights-only"),
    ("aihwkit-cpp", "gaussian"),
    ("fast", "gaussian"),
]


def run_one(engine: str, preset: str, batch: int, batches: int) -> dict:
    """Time one configuration in this process, interleaved batch by batch with the digital
    forward (NCHW and channels-last batches), so that the ratios compare runs on the same
    machine state; medians over the timed batches. Also the process's peak RSS."""
    import statistics

    import torch

    from hwsim.util.memory import keep_freed_memory

    keep_freed_memory()  # unless HWSIM_MALLOC=default (--allocator default)
    from hwsim.analog.presets import load_preset
    from hwsim.engine import create_engine
    from hwsim.models import create_model

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = create_model("resnet20", bn=True, num_classes=10, in_channels=3).eval()
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, 3, 32, 32, generator=gen) for _ in range(batches + 1)]
    xs_cl = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    forward = None
    if engine != "digital":
        e = create_engine(engine, model, load_preset(preset), torch.device("cpu"))
        e.program(0)
        if e.preset.time_dependent:
            e.drift(86400.0, 1)
        forward = e.model  # hwsim feeds every engine channels-last batches

    def timed(f, x):
        start = time.perf_counter()
        f(x)
        return time.perf_counter() - start

    times = {"digital": [], "digital-channels-last": [], "engine": []}
    with torch.no_grad():
        model(xs[0]), model(xs_cl[0])  # warm-up
        if forward is not None:
            forward(xs_cl[0])
        for x, x_cl in zip(xs[1:], xs_cl[1:]):
            times["digital"].append(timed(model, x))
            times["digital-channels-last"].append(timed(model, x_cl))
            if forward is not None:
                times["engine"].append(timed(forward, x_cl))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    seconds = med.get("engine", med["digital"])
    return {"engine": engine, "preset": preset, "seconds_per_batch": seconds,
            "digital_seconds": med["digital"],
            "digital_channels_last_seconds": med["digital-channels-last"],
            "ratio_digital": seconds / med["digital"],
            "ratio_digital_channels_last": seconds / med["digital-channels-last"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def kernel_build() -> dict:
    """Seconds to compile the fused kernel (fresh cache) and to load it from the cache, each
    in a new process."""
    import tempfile

    code = ("from hwsim.engine import kernels; kernels.library(); "
            "print(kernels.build_seconds)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HWSIM_CACHE_DIR": cache}
        for what in ("compile_seconds", "load_seconds"):
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, env=env)
            value = proc.stdout.strip().splitlines()[-1]
            out[what] = None if value == "None" else float(value)
    return out


def validate(repeats: int = 30) -> list[dict]:
    """Fast vs aihwkit accuracy distributions on a trained model (same programmed chips)."""
    from hwsim.analog.presets import load_preset
    from hwsim.data import load_dataset
    from hwsim.inference.analog import to_analog
    from hwsim.inference.montecarlo import InferSettings, run_inference
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import train
    from hwsim.util.timefmt import format_time

    warnings.filterwarnings("ignore")
    data = load_dataset("digits")
    trained = train(TrainConfig("cnn", True, "digits", epochs=3, batch_size=32), data,
                    progress=False)
    rows = []
    for name in ("pcm", "pcm-column", "reram", "pcm-weights-only", "ideal"):
        analog = to_analog(trained.checkpoint, load_preset(name), "keep").checkpoint
        for engine in ("aihwkit", "fast"):
            settings = InferSettings(times=(1.0, 86400.0, 31536000.0), repeats=repeats,
                                     engine=engine)
            result = run_inference(analog, data, settings, progress=False)
            for s in result.summary:
                rows.append({"preset": name, "engine": engine, "t": format_time(s.t_inference),
                             "mean": s.mean, "ci95": s.ci95, "seconds": result.seconds})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--torch-tile", action="store_true",
                    help="also time aihwkit's torch tiles with pcm (about 13 s per batch)")
    ap.add_argument("--only", nargs="+", metavar="ENGINE:PRESET",
                    help="time only these rows (e.g. digital:- fast:pcm)")
    ap.add_argument("--allocator", choices=("hwsim", "default"), default="hwsim",
                    help="hwsim: freed buffers kept for reuse, as the hwsim command runs "
                         "(hwsim.util.memory); default: glibc's own settings")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        print(json.dumps(run_one(*args.one, args.batch, args.batches)))
        return

    configs = list(CONFIGS)
    if args.torch_tile:
        configs.append(("aihwkit", "pcm"))
    if args.only:
        configs = [tuple(c.split(":", 1)) for c in args.only]
    build = kernel_build()
    results = []
    for engine, preset in configs:
        env = dict(os.environ, HWSIM_MALLOC="default" if args.allocator == "default" else "")
        proc = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--batches",
                               str(args.batches), "--one", engine, preset],
                              capture_output=True, text=True, check=True, env=env)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  measured {engine:<12} {preset:<17} {r['seconds_per_batch']:.3f} s",
              file=sys.stderr, flush=True)
    print(f"\nResNet-20 (BN, random weights), batch {args.batch} of 3x32x32, median of "
          f"{args.batches} timed batches after a warm-up; each row in its own process, its "
          "digital forward timed in the same process, batch by batch in turn; allocator: "
          + ("glibc's defaults" if args.allocator == "default"
             else "freed buffers kept for reuse, as the hwsim command runs"))
    print(f"{'engine':<12} {'preset':<17} {'s/batch':>8} {'digital s':>10} {'x digital':>10} "
          f"{'x digital (CL)':>15} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['engine']:<12} {r['preset']:<17} {r['seconds_per_batch']:8.3f} "
              f"{r['digital_seconds']:10.3f} {r['ratio_digital']:10.2f} "
              f"{r['ratio_digital_channels_last']:15.2f} {r['peak_rss_mb']:12.0f}")
    print("x digital: against the digital model on NCHW batches (the plain PyTorch forward); "
          "x digital (CL): on channels-last batches, the layout hwsim feeds every engine.")
    if build["compile_seconds"] is None:
        print("fused kernel: unavailable (no working C compiler): the fast engine ran eagerly")
    else:
        print(f"fused kernel: compiled in {build['compile_seconds']:.2f} s (once per machine); "
              f"later processes load it from the cache in {build['load_seconds']:.3f} s")
    out = {"speed": results, "kernel_build": build}
    if args.validate:
        rows = validate()
        print("\nValidation: cnn on digits (450 test images), 30 repeats, same programmed chips")
        print(f"{'preset':<17} {'t':>4} {'aihwkit mean ± CI':>20} {'fast mean ± CI':>20}")
        by = {(r["preset"], r["t"], r["engine"]): r for r in rows}
        for (preset, t, engine), r in by.items():
            if engine != "aihwkit":
                continue
            f = by[(preset, t, "fast")]
            print(f"{preset:<17} {t:>4} {100 * r['mean']:11.2f} ± {100 * r['ci95']:5.2f} "
                  f"{100 * f['mean']:11.2f} ± {100 * f['ci95']:5.2f}")
        times = {(r["preset"], r["engine"]): r["seconds"] for r in rows}
        for preset in dict.fromkeys(r["preset"] for r in rows):
            print(f"  {preset}: aihwkit {times[(preset, 'aihwkit')]:.1f} s, "
                  f"fast {times[(preset, 'fast')]:.1f} s")
        out["validation"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
