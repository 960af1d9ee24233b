"""Executors: where a study's work units run (:mod:`hwsim.study.units`).

- :class:`LocalExecutor` runs them one after the other in this process (the default).
- :class:`RayExecutor` runs them as Ray tasks on a Ray cluster (``pip install 'hwsim[ray]'``),
  or on a local Ray instance started for the run.

Both hand the results back to the study driver (:func:`hwsim.study.run_study`) as they
complete; the driver is the only writer of the store and of the checkpoint files. On Ray a
trained checkpoint travels to the inference tasks through Ray's object store, and each node
loads the study's datasets itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from hwsim.checkpoint import Checkpoint
from hwsim.errors import ConfigError, DatasetError, HwsimError
from hwsim.registry import Registry
from hwsim.study.units import (
    InferOutcome,
    InferUnit,
    TrainOutcome,
    TrainUnit,
    UnitCache,
    UnitSettings,
    run_infer_unit,
    run_train_unit,
)

# name -> a function building the executor (connected and checked)
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
RAY_INSTALL_HINT = ("--executor ray needs Ray: pip install 'hwsim[ray]' (from a checkout: "
                    "pip install -e '.[ray]')")
MAX_RETRIES = 3  # a task whose worker process or node dies is rerun this many times

Progress = Callable[[InferUnit, int], None]  # (unit, cells just computed)


class Executor:
    """Runs units and yields their outcomes as they complete (in any order)."""

    name = "base"

    def share(self, data: bytes, ckpt: Checkpoint) -> Any:
        """A handle by which inference units reach a model's checkpoint."""
        raise NotImplementedError

    def train(self, units: list[TrainUnit], settings: UnitSettings, *,
              log: Callable[[str], None], progress: bool) -> Iterator[TrainOutcome]:
        raise NotImplementedError

    def infer(self, units: list[tuple[InferUnit, Any]], settings: UnitSettings, *,
              progress: Progress) -> Iterator[InferOutcome]:
        """Run each (unit, checkpoint handle from :meth:`share`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""


class LocalExecutor(Executor):
    """Everything in this process, in the driver's order: hwsim's behaviour without Ray."""

    name = "local"

    def __init__(self):
        self.cache = UnitCache()

    def share(self, data: bytes, ckpt: Checkpoint) -> Checkpoint:
        return ckpt

    def train(self, units, settings, *, log, progress):
        for i, unit in enumerate(units, 1):
            if unit.checkpoint is None:
                log(f"[train {i}/{len(units)}] {unit.label}: {unit.job.train.epochs} epoch(s)")
            yield run_train_unit(unit, settings, self.cache, progress=progress)

    def infer(self, units, settings, *, progress):
        for unit, ckpt in units:
            progress(unit, 0)
            yield run_infer_unit(unit, ckpt, settings, self.cache,
                                 on_eval=lambda unit=unit: progress(unit, 1))


def create_executor(name: str, *, address: str | None = None, gpus_per_task: float | None = None,
                    cpus_per_task: float | None = None, compute_device: str = "auto") -> Executor:
    """The executor ``name`` (``local`` or ``ray``), connected and checked.

    Raises:
        ConfigError: unknown name, Ray options without ``ray``, Ray not installed, a cluster
            that cannot be reached, or resources that no node of the cluster has.
    """
    return EXECUTORS.get(name)(address=address, gpus_per_task=gpus_per_task,
                               cpus_per_task=cpus_per_task, compute_device=compute_device)


@EXECUTORS.register("local")
def _local(*, address, gpus_per_task, cpus_per_task, compute_device) -> Executor:
    given = [opt for opt, v in (("--address", address), ("--gpus-per-task", gpus_per_task),
                                ("--cpus-per-task", cpus_per_task)) if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --executor ray")
    return LocalExecutor()


@EXECUTORS.register("ray")
def _ray(*, address, gpus_per_task, cpus_per_task, compute_device) -> Executor:
    return RayExecutor.connect(address, gpus_per_task=gpus_per_task,
                               cpus_per_task=cpus_per_task, compute_device=compute_device)


# ------------------------------------------------------------------------------------ Ray


class RayExecutor(Executor):
    """Units as Ray tasks; outcomes come back in the order they finish (``ray.wait``).

    Each task asks for ``cpus`` CPUs and ``gpus`` GPUs, pins torch to ``cpus`` threads (so a
    training task computes the same weights as the local executor with as many threads), and
    is retried up to :data:`MAX_RETRIES` times if its worker process or node dies. An error
    in a unit (a dataset missing on a node, say) is not retried: the run stops, cancelling
    what is in flight, and every result already handed to the driver stays committed.
    """

    name = "ray"

    def __init__(self, ray_module, *, cpus: float, gpus: float, owned: bool):
        self.ray = ray_module
        self.cpus, self.gpus, self.owned = cpus, gpus, owned
        # where a task computes: Ray leaves every GPU of a node visible to a task that holds
        # none, so "auto" would take a GPU it did not reserve
        self.compute_device = "cuda" if gpus > 0 else "cpu"
        self._train_task = ray_module.remote(_train_task)
        self._infer_task = ray_module.remote(_infer_task)

    @classmethod
    def connect(cls, address: str | None, *, gpus_per_task: float | None = None,
                cpus_per_task: float | None = None, compute_device: str = "auto") -> RayExecutor:
        """Connect to the cluster at ``address`` (``auto``: the one running here), or start a
        local Ray instance sized to this machine; reuse this process's connection if it has
        one. Checks that some node can run a task of the asked size."""
        if gpus_per_task is not None and (gpus_per_task < 0 or gpus_per_task > 1
                                          and gpus_per_task != int(gpus_per_task)):
            raise ConfigError(f"--gpus-per-task {gpus_per_task:g}: must be a fraction in [0, 1] "
                              "or a whole number of GPUs")
        if cpus_per_task is not None and cpus_per_task <= 0:
            raise ConfigError(f"--cpus-per-task {cpus_per_task:g}: must be > 0")
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_INSTALL_HINT) from None
        owned = not ray.is_initialized()
        if owned:
            address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's convention
        _check_reachable(address)
        if not owned and address not in (None, "auto", _gcs_address(ray)):
            raise ConfigError(f"--address {address}: this process is already connected to the "
                              f"Ray cluster at {_gcs_address(ray)}")
        if owned:
            # Ray announces that a new local instance uses token authentication: not ours to say
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
            try:
                ray.init(address=address or "local", include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"--address {address}: {_connect_error(e)}") from None
        try:
            cpus, gpus = _task_size(ray, gpus_per_task, cpus_per_task, compute_device)
        except HwsimError:
            if owned:
                ray.shutdown()
            raise
        return cls(ray, cpus=cpus, gpus=gpus, owned=owned)

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()

    def _options(self) -> dict:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": MAX_RETRIES}

    def share(self, data: bytes, ckpt: Checkpoint) -> Any:
        # in a list, so that a task fetches the bytes only when it has to build an engine
        return [self.ray.put(data)]

    def train(self, units, settings, *, log, progress):
        if units:
            log(f"[train] {len(units)} model(s) to train or evaluate on Ray "
                f"({self.cpus:g} CPU, {self.gpus:g} GPU per task)")
        threads = _threads(self.cpus)
        settings = dataclasses.replace(settings, compute_device=self.compute_device)
        task = self._train_task.options(**self._options())
        refs = {task.remote(unit, settings, threads): unit for unit in units}
        for i, outcome in enumerate(self._as_completed(refs), 1):
            if outcome.checkpoint is not None:
                log(f"[train {i}/{len(units)}] {outcome.unit.label}: trained in "
                    f"{outcome.seconds:.0f} s")
            yield outcome

    def infer(self, units, settings, *, progress):
        threads = _threads(self.cpus)
        settings = dataclasses.replace(settings, compute_device=self.compute_device)
        task = self._infer_task.options(**self._options())
        refs = {task.remote(unit, ckpt, settings, threads): unit for unit, ckpt in units}
        for outcome in self._as_completed(refs):
            progress(outcome.unit, len(outcome.accuracies))
            yield outcome

    def _as_completed(self, refs: dict) -> Iterator:
        ray = self.ray
        pending = dict(refs)
        try:
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(ready)
                try:
                    outcome = ray.get(ready)
                except ray.exceptions.RayTaskError as e:
                    if isinstance(e.cause, HwsimError):
                        raise e.cause from None
                    raise
                except ray.exceptions.RayError as e:  # after Ray's own retries
                    raise HwsimError(f"Ray could not run the task of {unit.label}: "
                                     f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
                yield outcome
        finally:  # an error, or the driver stopping early: nothing more is wanted
            for ref in pending:
                ray.cancel(ref)


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """ConfigError unless ``address`` (``[ray://]host:port``) accepts a TCP connection:
    Ray itself keeps retrying an unreachable address for minutes."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379) or "
                          "auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there "
                          f"({e.strerror or e})") from None


def _gcs_address(ray) -> str:
    return ray.get_runtime_context().gcs_address


def _connect_error(e: BaseException) -> str:
    chain = []
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any("InvalidAuthToken" in str(x) or "AuthenticationError" in type(x).__name__
           for x in chain):
        return ("the Ray cluster refused the connection: it uses token authentication; set "
                "RAY_AUTH_MODE=token and give its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    return f"cannot connect to a Ray cluster ({str(chain[0]).splitlines()[0]})"


def _task_size(ray, gpus: float | None, cpus: float | None, device: str) -> tuple[float, float]:
    """CPUs and GPUs per task: the options, else 1 GPU when the study runs on CUDA (or on
    ``auto`` and the cluster has GPUs), and as many CPUs as torch uses here (1 with a GPU)."""
    import torch

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if gpus is None:
        gpus = 1.0 if device != "cpu" and most_gpus >= 1 else 0.0
    if device == "cuda" and gpus == 0:
        raise ConfigError("--compute-device cuda: " + (
            "the Ray cluster has no GPU" if most_gpus == 0 else "give --gpus-per-task > 0"))
    if device == "cpu" and gpus > 0:
        raise ConfigError(f"--gpus-per-task {gpus:g} with --compute-device cpu: the tasks "
                          "would hold GPUs they do not use")
    if gpus > most_gpus:
        raise ConfigError(f"--gpus-per-task {gpus:g}: no node of the Ray cluster has that many "
                          f"GPUs (the most on one node: {most_gpus:g})")
    if cpus is None:
        cpus = 1.0 if gpus > 0 else float(min(torch.get_num_threads(), max(most_cpus, 1)))
    if cpus > most_cpus:
        raise ConfigError(f"--cpus-per-task {cpus:g}: no node of the Ray cluster has that many "
                          f"CPUs (the most on one node: {most_cpus:g})")
    return cpus, gpus


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


# ------------------------------------------------------------- what runs on a Ray worker

_WORKER_CACHE = UnitCache()  # one per worker process, kept between its tasks


def _on_worker(run, unit, threads: int):
    import torch

    from hwsim.util.memory import keep_freed_memory

    keep_freed_memory()  # as the hwsim command does in its own process
    torch.set_num_threads(threads)
    try:
        return run()
    except DatasetError as e:
        import ray

        node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
        raise DatasetError(f"Ray node {node} cannot load dataset {unit.dataset!r}: {e}") from None


def _train_task(unit: TrainUnit, settings: UnitSettings, threads: int) -> TrainOutcome:
    return _on_worker(lambda: run_train_unit(unit, settings, _WORKER_CACHE), unit, threads)


def _infer_task(unit: InferUnit, ckpt_ref: list, settings: UnitSettings,
                threads: int) -> InferOutcome:
    def checkpoint() -> Checkpoint:
        import ray

        from hwsim.checkpoint import checkpoint_from_bytes

        return checkpoint_from_bytes(ray.get(ckpt_ref[0]), unit.job.model.checkpoint_name)

    return _on_worker(lambda: run_infer_unit(unit, checkpoint, settings, _WORKER_CACHE), unit,
                      threads)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "create_executor"]
