"""Where digital training time goes: a per-phase breakdown of hwsim's training step.

Runs ``--steps`` steps of the loop in :func:`hwsim.train.train` (same model, memory layout,
optimiser, schedule, gradient clipping, batches and per-step bookkeeping) with a timer around
each phase, then the final evaluation on the whole test set that ``train()`` ends with, and
prints one Markdown table with stable columns::

    | layout | phase | ms / step | share |

Phases: ``batch`` (shuffled indexing, augmentation, normalisation: ``iterate_batches``),
``forward`` (model and loss), ``backward`` (``zero_grad`` and ``backward``), ``clip``
(gradient-norm cap), ``step`` (optimiser), ``bookkeeping`` (learning-rate schedule, the
finite-loss check, ``loss.item()``, accuracy, the progress bar), ``step total``; each is the
median over the steps, and ``share`` is its part of the summed medians. Then ``epoch (est.)``
(step total x steps per epoch) and ``final eval`` (both in ms in the ``ms / step`` column;
the evaluation's share is of ``--epochs`` epochs of training plus that evaluation).

``--layout`` picks the memory layout of the model during training: ``auto`` (what ``train()``
does: channels-last on a CPU), ``nchw`` or ``channels-last``. ``--ab`` runs the two layouts
side by side, alternating step by step in this one process (each with its own model and
optimiser, on the same batches), and adds ``step total`` ratio rows: on a shared machine
only such interleaved ratios mean something.

Example (the Fashion-MNIST ResNet-20 of ``experiments/quick.yaml``)::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_train.py --arch resnet20 --bn \\
        --dataset fashion-mnist --steps 60 --ab
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time

import torch
from torch import nn
from tqdm import tqdm

from hwsim.data import iterate_batches, load_dataset
from hwsim.inference.evaluate import evaluate
from hwsim.models import create_model
from hwsim.training.config import TrainConfig
from hwsim.training.loop import lr_at
from hwsim.util.runtime import resolve_compute_device, seed_everything

PHASES = ("batch", "forward", "backward", "clip", "step", "bookkeeping")


class Runner:
    """One model and optimiser, stepped one batch at a time with per-phase timers."""

    def __init__(self, config: TrainConfig, data, dev: torch.device, layout: str, total: int):
        seed_everything(config.seed)
        self.config, self.dev, self.total = config, dev, total
        model = create_model(config.arch, bn=config.bn, num_classes=data.num_classes,
                             in_channels=data.in_channels, input_size=data.input_size).to(dev)
        if layout == "channels-last" or (layout == "auto" and dev.type == "cpu"):
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        self.opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, momentum=config.momentum, nesterov=True,
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.bar = tqdm(total=total, file=io.StringIO())  # drawn, as in train(), unseen
        self.times: dict[str, list[float]] = {p: [] for p in PHASES}
        self.step_index = self.seen = self.correct = 0
        self.loss_sum = 0.0

    def step(self, batches) -> None:
        c, t = self.config, time.perf_counter
        t0 = t()
        xb, yb = next(batches)
        t1 = t()
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step_index, self.total, c.lr, c.warmup_frac)
        t2 = t()
        out = self.model(xb)
        loss = self.loss_fn(out, yb)
        t3 = t()
        if not torch.isfinite(loss):
            raise SystemExit(f"loss diverged at step {self.step_index}")
        t4 = t()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t5 = t()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        t6 = t()
        self.opt.step()
        t7 = t()
        self.step_index += 1
        self.seen += len(yb)
        self.loss_sum += loss.item() * len(yb)
        self.correct += int((out.argmax(1) == yb).sum())
        self.bar.update(1)
        self.bar.set_postfix(epoch="1/1", loss=f"{self.loss_sum / self.seen:.3f}",
                             acc=f"{self.correct / self.seen:.3f}")
        t8 = t()
        for phase, seconds in zip(PHASES, (t1 - t0, t3 - t2, t5 - t4, t6 - t5, t7 - t6,
                                           (t2 - t1) + (t4 - t3) + (t8 - t7))):
            self.times[phase].append(seconds)

    def medians(self) -> dict[str, float]:
        return {p: statistics.median(v) for p, v in self.times.items()}


def batch_stream(data, config: TrainConfig, dev: torch.device):
    """Endless training batches, shuffled and augmented exactly as in ``train()``."""
    gen = torch.Generator().manual_seed(config.seed)
    x, y = data.train_x, data.train_y
    while True:
        yield from iterate_batches(x, y, config.batch_size, mean=data.mean, std=data.std,
                                   device=dev, shuffle_generator=gen, augment=data.augment)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--bn", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=2, help="for the final evaluation's share")
    ap.add_argument("--steps", type=int, default=50, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--layout", choices=("auto", "nchw", "channels-last"), default="auto")
    ap.add_argument("--ab", action="store_true", help="alternate nchw and channels-last")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--compute-device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_compute_device(args.compute_device)
    data = load_dataset(args.dataset)
    config = TrainConfig(args.arch, args.bn, args.dataset, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr)
    steps_per_epoch = math.ceil(len(data.train_y) / config.batch_size)
    layouts = ("nchw", "channels-last") if args.ab else (args.layout,)
    runners = {lay: Runner(config, data, dev, lay, steps_per_epoch * args.epochs)
               for lay in layouts}
    streams = {lay: batch_stream(data, config, dev) for lay in layouts}
    for i in range(args.steps + 2):
        order = layouts if i % 2 == 0 else layouts[::-1]
        for lay in order:
            runners[lay].step(streams[lay])
    for r in runners.values():  # drop the warm-up steps
        r.times = {p: v[2:] for p, v in r.times.items()}

    print(f"# {args.arch} {'BN' if args.bn else 'no BN'} on {args.dataset}, batch "
          f"{config.batch_size} ({steps_per_epoch} steps per epoch), {args.steps} steps timed, "
          f"{torch.get_num_threads()} thread(s), {dev.type}")
    print("| layout | phase | ms / step | share |")
    print("|---|---|---|---|")
    totals = {}
    for lay, r in runners.items():
        med = r.medians()
        totals[lay] = sum(med.values())
        for p in PHASES:
            print(f"| {lay} | {p} | {1000 * med[p]:.2f} | {med[p] / totals[lay]:.3f} |")
        print(f"| {lay} | step total | {1000 * totals[lay]:.2f} | 1.000 |")
    if args.ab:
        # ratio of per-step totals, step by step (both ran within the same moment)
        per_step = [sum(ts) for ts in zip(*runners["channels-last"].times.values())]
        base = [sum(ts) for ts in zip(*runners["nchw"].times.values())]
        ratio = statistics.median(a / b for a, b in zip(per_step, base))
        print(f"| channels-last / nchw | step total ratio | {ratio:.3f} | - |")
    lay = layouts[-1]
    model = runners[lay].model.to(memory_format=torch.contiguous_format)
    t0 = time.perf_counter()
    evaluate(model, data.test_x, data.test_y, data.normalization, device=dev)
    eval_s = time.perf_counter() - t0
    epoch_s = totals[lay] * steps_per_epoch
    print(f"| {lay} | epoch (est.) | {1000 * epoch_s:.0f} | - |")
    print(f"| {lay} | final eval | {1000 * eval_s:.0f} | "
          f"{eval_s / (eval_s + args.epochs * epoch_s):.3f} |")


if __name__ == "__main__":
    main()
