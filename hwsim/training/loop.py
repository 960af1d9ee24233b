"""Digital training: SGD with Nesterov momentum, linear warm-up then cosine decay."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from hwsim import stats
from hwsim.checkpoint import Checkpoint, from_model
from hwsim.data import Dataset, iterate_batches
from hwsim.errors import HwsimError
from hwsim.inference.evaluate import evaluate
from hwsim.models import check_arch, create_model
from hwsim.training import hwa
from hwsim.training.config import TrainConfig
from hwsim.util.runtime import resolve_compute_device, seed_everything, sha256_file
from hwsim.util.seeds import derive_seed


class TrainingError(HwsimError):
    """Training diverged."""

    exit_code = 1


@dataclass
class TrainResult:
    model: nn.Module
    checkpoint: Checkpoint
    test_accuracy: float
    seconds: float


def not_learned_warning(what: str, accuracy: float, num_classes: int,
                        factor: float = stats.LEARNED_FACTOR, *, fix: str) -> str | None:
    """A one-line warning if ``accuracy`` is not clearly above chance, else None.

    Args:
        what: the model, e.g. "vgg11 without BN on digits".
        fix: what to change, e.g. "train it longer (--epochs)".
    """
    if stats.has_learned(accuracy, num_classes, factor):
        return None
    chance = stats.chance_accuracy(num_classes)
    return (f"Warning: {what} did not learn: test accuracy {100 * accuracy:.1f}%, below "
            f"{100 * stats.learned_threshold(num_classes, factor):.0f}% ({factor:g}x chance, "
            f"{100 * chance:.0f}%); its analog results say nothing about noise resistance. "
            f"To fix: {fix}.")


def lr_at(step: int, total: int, base_lr: float, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to zero."""
    warmup = max(1, int(total * warmup_frac))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def train(
    config: TrainConfig,
    data: Dataset,
    *,
    compute_device: str = "auto",
    progress: bool = True,
) -> TrainResult:
    """Train ``config.arch`` on ``data`` and return the model and its checkpoint.

    Same config, same data, same machine -> bit-identical weights.

    Raises:
        ConfigError: unknown architecture or bad settings.
        TrainingError: the loss became NaN/inf.
    """
    check_arch(config.arch)
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise TrainingError("epochs, batch size and learning rate must be positive")
    init = None if config.init is None else hwa.load_init(config.init, config.arch, config.bn,
                                                          data.name)
    dev = resolve_compute_device(compute_device)
    seed_everything(config.seed)
    model = create_model(config.arch, bn=config.bn, num_classes=data.num_classes,
                         in_channels=data.in_channels, input_size=data.input_size)
    if init is not None:
        model.load_state_dict(init.state_dict)
    model = model.to(dev)
    if dev.type == "cpu":
        # Channels-last weights make every convolution run channels-last (a 1-channel batch
        # cannot say so itself): 20-26% less time per step on Fashion-MNIST, measured. It
        # changes float rounding (BN's batch statistics are summed in another order), so
        # seeded checkpoints differ from those of NCHW training; each remains reproducible.
        model = model.to(memory_format=torch.channels_last)
    forward = hwa.noisy_forward(model, config.hwa_noise, torch.Generator(dev).manual_seed(
        derive_seed(config.seed, "hwa-noise")))
    train_x, train_y = data.train_x, data.train_y
    if config.train_subset is not None:
        train_x, train_y = train_x[: config.train_subset], train_y[: config.train_subset]
    # BN and bias parameters get no weight decay (the usual practice; matters for BN-free nets).
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=True,
    )
    gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train_y) / config.batch_size)
    total = steps_per_epoch * config.epochs
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"train {config.arch}{'' if config.bn else ' no-BN'}")
    step = 0
    for epoch in range(config.epochs):
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        for xb, yb in iterate_batches(train_x, train_y, config.batch_size, mean=data.mean,
                                      std=data.std, device=dev, shuffle_generator=gen,
                                      augment=data.augment):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, config.lr, config.warmup_frac)
            out = forward(xb)
            loss = loss_fn(out, yb)
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingError(
                    f"training diverged (loss {loss.item()}) in epoch {epoch + 1}; "
                    f"try a smaller --lr than {config.lr}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            hwa.clip_weights(model, config.hwa_clip)
            step += 1
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss_sum / seen:.3f}",
                            acc=f"{correct / seen:.3f}")
    bar.close()
    model = model.to(memory_format=torch.contiguous_format)  # checkpoints hold plain tensors
    test_acc = evaluate(model, data.test_x, data.test_y, data.normalization, device=dev)
    seconds = time.perf_counter() - start
    train_config = config.to_dict() | (
        {} if init is None else {"init_sha256": sha256_file(config.init)})
    ckpt = from_model(model, arch=config.arch, bn=config.bn, dataset=data.name,
                      train_config=train_config, seed=config.seed, test_accuracy=test_acc)
    return TrainResult(model.eval(), ckpt, test_acc, seconds)
