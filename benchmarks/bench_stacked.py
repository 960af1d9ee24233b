"""Chips stacked in one forward against one at a time: when does stacking pay (not a test)?

Times :func:`hwsim.inference.montecarlo.run_repeat` (program one chip, drift it to the quick
study's three times, evaluate each) with the times stacked in one forward
(:mod:`hwsim.engine.stacked`) and one at a time, interleaved round by round in one process,
for digital checkpoints (``--checkpoints``: ``*.pt`` files), presets and numbers of test
images. Both give the same records (checked here too). Medians of ``--rounds``; wall clock
and this process's CPU time (on a shared machine the CPU time is the steadier of the two).
The size rule :data:`hwsim.inference.montecarlo.STACK_INPUT_ELEMENTS` comes from this table.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_stacked.py --checkpoints a.pt b.pt
        [--presets pcm,gaussian] [--images 16,32,128,450] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

TIMES = [1.0, 86400.0, 31536000.0]  # quick.yaml's 1s, 1d, 1y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", nargs="+", required=True)
    ap.add_argument("--presets", default="pcm,gaussian")
    ap.add_argument("--images", default="16,32,128,450")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from hwsim.analog.presets import load_preset
    from hwsim.checkpoint import load_checkpoint
    from hwsim.data import load_dataset
    from hwsim.engine import create_engine
    from hwsim.inference import montecarlo
    from hwsim.inference.analog import to_analog

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print("| model | dataset | preset | images | one at a time (ms) | stacked (ms) | "
          "stacked / one, wall | stacked / one, CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        data = load_dataset(ckpt.dataset)
        for name in args.presets.split(","):
            preset = load_preset(name)
            analog = to_analog(ckpt, preset, "keep").checkpoint
            engine = create_engine("fast", analog.build_model().eval(), preset,
                                   torch.device("cpu"))
            times = TIMES if preset.time_dependent else [None]
            for n in map(int, args.images.split(",")):
                x, y = data.test_subset(n)
                wall = {"one": [], "stacked": []}
                cpu = {"one": [], "stacked": []}
                records = {}
                for r in range(args.rounds + 1):  # round 0 warms up
                    for key, limit in (("one", 0), ("stacked", 10**12)):
                        montecarlo.STACK_INPUT_ELEMENTS = limit
                        w0, c0 = time.perf_counter(), time.process_time()
                        records[key] = montecarlo.run_repeat(
                            engine, r, times, x, y, data.normalization, seed=0)
                        if r:
                            wall[key].append(time.perf_counter() - w0)
                            cpu[key].append(time.process_time() - c0)
                    if records["one"] != records["stacked"]:
                        raise SystemExit(f"different records: {records}")
                w = {k: statistics.median(v) for k, v in wall.items()}
                c = {k: statistics.median(v) for k, v in cpu.items()}
                print(f"| {ckpt.arch} {'BN' if ckpt.bn else 'no BN'} | {ckpt.dataset} | "
                      f"{name} | {n} | {1e3 * w['one']:.1f} | {1e3 * w['stacked']:.1f} | "
                      f"{w['stacked'] / w['one']:.2f} | {c['stacked'] / c['one']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
