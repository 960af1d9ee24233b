"""The study on a Ray cluster (``--executor ray``): same cells as in-process, resumable after
the driver is killed, complete after a worker is killed; bad options give one line.

One local Ray instance (2 CPUs) serves the whole module: starting Ray costs seconds.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim.cli import cli
from hwsim.errors import DatasetError
from hwsim.study import load_study, run_study
from hwsim.study.executors import RayExecutor
from hwsim.study.store import STORE_NAME, Store

STUDY = """\
name: tiny-ray
datasets:
  - name: digits
    epochs: 2
    batch_size: 32
    train_subset: 600
    test_subset: 150
architectures: [cnn]
bn: [bn, no-bn]
bn_modes: [keep, fold, recal]
calib_size: 200
presets: [pcm, gaussian]
times: [1d]
etas: [0.5]
repeats: 3
engine: fast
learned_factor: 5.0  # the BN-free model (43%) did not learn: its warning is logged
"""
CELLS = 4 * (1 + 1) * 3  # (BN keep, fold, recal, no BN) x (pcm at 1d, gaussian at eta 0.5) x 3


def quiet(_msg):
    pass


def cells(run_dir) -> dict:
    with Store(Path(run_dir) / STORE_NAME) as store:
        return {(c["arch"], c["bn"], c["bn_mode"], c["preset"], c["eta"], c["t"], c["repeat"]):
                c["accuracy"] for c in store.cells()}


def checkpoints(run_dir) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (Path(run_dir) / "checkpoints").glob("*.pt")}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-study") / "tiny.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def local_run(study_file):
    """The reference: the same study, in this process."""
    run_dir = study_file.parent / "local"
    log = []
    run = run_study(load_study(study_file), run_dir, progress=False, log=log.append)
    assert run.computed_cells == CELLS and run.trained == 2
    assert warnings(log) == ["cnn without BN on digits (seed 0) did not learn"]
    return run_dir


def warnings(log: list[str]) -> list[str]:
    return [line.removeprefix("Warning: ").split(":")[0] for line in log
            if line.startswith("Warning: ")]


def ray_executor(**kw) -> RayExecutor:
    return RayExecutor.connect(None, **kw)


def test_ray_gives_the_cells_and_checkpoints_of_the_local_executor(cluster, study_file,
                                                                     local_run, tmp_path):
    executor = ray_executor()
    assert (executor.cpus, executor.gpus) == (2, 0)  # as many CPUs as torch's threads here
    log = []
    run = run_study(load_study(study_file), tmp_path / "ray", executor=executor,
                    progress=False, log=log.append)
    assert run.computed_cells == CELLS and run.trained == 2
    assert warnings(log) == ["cnn without BN on digits (seed 0) did not learn"]
    assert checkpoints(tmp_path / "ray") == checkpoints(local_run)  # same bytes
    assert cells(tmp_path / "ray") == cells(local_run)
    with Store(tmp_path / "ray" / STORE_NAME) as a, Store(local_run / STORE_NAME) as b:
        assert [m | {"checkpoint": "", "train_seconds": 0} for m in a.models()] == \
               [m | {"checkpoint": "", "train_seconds": 0} for m in b.models()]
        assert a.meta()["datasets"] == b.meta()["datasets"]
        recal = a.meta()["recalibration"]
        assert [e["count"] for e in recal.values()] == [6]  # 2 presets x 3 repeats, one time
        assert recal.keys() == b.meta()["recalibration"].keys()
    assert grid(tmp_path / "ray") == grid(local_run) == {"model": 2, "cell": CELLS}


def grid(run_dir: Path) -> dict:
    with sqlite3.connect(run_dir / STORE_NAME) as con:
        return dict(con.execute("SELECT kind, COUNT(*) FROM grid GROUP BY kind").fetchall())


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_driver_killed_then_resumed_on_ray_gives_the_uninterrupted_cells(cluster, study_file,
                                                                          local_run, tmp_path):
    run_dir = tmp_path / "killed"
    # the trained checkpoints without their records: the killed run evaluates them on Ray
    shutil.copytree(local_run / "checkpoints", run_dir / "checkpoints")
    args = ["study", "run", str(study_file), "--out", str(run_dir), "--no-report",
            "--executor", "ray", "--address", cluster]
    # a cluster started by ray.init() asks for its token from clients given its address
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "token"}
    driver = subprocess.Popen([sys.executable, "-m", "hwsim", *args], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while driver.poll() is None and _count(run_dir / STORE_NAME) < 2:
            assert time.monotonic() < deadline, "no cell committed in 120 s"
            time.sleep(0.05)
        assert driver.poll() is None, "the run finished before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: the assert says why
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    kept = cells(run_dir)
    assert 2 <= len(kept) < CELLS
    # the same command, here (this process's connection to the cluster, warm workers)
    resumed = CliRunner().invoke(cli, args)
    assert resumed.exit_code == 0, resumed.output
    assert f"{len(kept)} already in the store, {CELLS - len(kept)} to compute" in resumed.stderr
    assert f"{CELLS - len(kept)} cells computed, {len(kept)} resumed" in resumed.stdout
    assert cells(run_dir) == cells(local_run)


def _ray_worker_running(task: str) -> int | None:
    """The pid of a worker of this process's Ray instance running ``task`` (its title)."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(f"ray::{task}".encode()):
                continue
            pid = int(proc.name)
            while pid > 1:  # one of our descendants: never another user's Ray
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1]
                          .split()[1])
                if pid == me:
                    return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_a_worker_killed_mid_task_is_retried_and_the_study_completes(cluster, study_file,
                                                                     local_run, tmp_path):
    run_dir = tmp_path / "worker-killed"
    shutil.copytree(local_run / "checkpoints", run_dir / "checkpoints")
    killed, stop = [], threading.Event()

    def kill_one_worker():
        while not killed and not stop.is_set():
            pid = _ray_worker_running("_infer_task")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        # as many threads per task as the local run had: chips are the same on any thread
        # count, but torch's float reductions (BN recalibration's batch statistics, the
        # forward) may round differently on another, and flip an image
        run = run_study(load_study(study_file), run_dir,
                        executor=ray_executor(), progress=False, log=quiet)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught running an inference task"
    assert run.computed_cells == CELLS
    assert cells(run_dir) == cells(local_run)


def test_a_dataset_missing_on_a_node_stops_the_run_naming_node_and_dataset(
        cluster, study_file, local_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(local_run, run_dir)
    empty = tmp_path / "no-data"
    empty.mkdir()
    wider = tmp_path / "wider.yaml"
    wider.write_text(STUDY.replace("datasets:\n", "datasets:\n  - name: fashion-mnist\n"
                                   "    epochs: 1\n") + f"data_dir: {empty}\n")
    with pytest.raises(DatasetError) as err:
        run_study(load_study(wider), run_dir, executor=ray_executor(), progress=False, log=quiet)
    assert str(err.value).startswith("Ray node ")
    assert "cannot load dataset 'fashion-mnist': Fashion-MNIST not found" in str(err.value)
    assert cells(run_dir) == cells(local_run)  # what was committed stays


def _one_line_error(args, expected: str, out: Path) -> None:
    result = CliRunner().invoke(cli, ["study", "run", *args, "--out", str(out), "--no-report"])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: ") and expected in line


@pytest.mark.parametrize("options,expected", [
    (["--executor", "ray", "--address", "127.0.0.1:1"],
     "--address 127.0.0.1:1: cannot reach a Ray cluster there (Connection refused)"),
    (["--executor", "ray", "--gpus-per-task", "1"],
     "--gpus-per-task 1: no node of the Ray cluster has that many GPUs (the most on one node: 0)"),
    (["--executor", "ray", "--gpus-per-task", "1.5"],
     "--gpus-per-task 1.5: must be a fraction in [0, 1] or a whole number of GPUs"),
    (["--executor", "ray", "--gpus-per-task", "-1"], "Invalid value for '--gpus-per-task'"),
    (["--executor", "ray", "--cpus-per-task", "3"],
     "--cpus-per-task 3: no node of the Ray cluster has that many CPUs (the most on one node: 2)"),
    (["--executor", "ray", "--compute-device", "cuda"],
     "--compute-device cuda: the Ray cluster has no GPU"),
    (["--address", "auto"], "--address: only with --executor ray"),
], ids=["unreachable", "gpus-none", "gpus-fraction", "gpus-negative", "cpus", "cuda",
        "local-address"])
def test_bad_ray_options_give_one_line_and_leave_the_store_alone(cluster, study_file, local_run,
                                                                 tmp_path, options, expected):
    before = snapshot(local_run)
    _one_line_error([str(study_file), *options], expected, local_run)
    assert snapshot(local_run) == before
    _one_line_error([str(study_file), *options], expected, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_without_ray_installed_one_line_says_how_to_install_it(study_file, tmp_path,
                                                               monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    _one_line_error([str(study_file), "--executor", "ray"],
                    "--executor ray needs Ray: pip install 'hwsim[ray]' (from a checkout: "
                    "pip install -e '.[ray]')", tmp_path / "run")
    assert not (tmp_path / "run").exists()


class FakeCluster:
    """What RayExecutor reads of a cluster: its nodes' resources (a GPU cluster, here), and
    whether this process started it."""

    def __init__(self, *nodes: dict):
        self._nodes = [{"Alive": True, "Resources": r} for r in nodes]
        self.started = None  # ray.init's arguments
        self.running = False

    def nodes(self):
        return self._nodes

    def remote(self, fn):
        return fn

    def is_initialized(self):
        return self.running

    def init(self, **kw):
        self.started, self.running = kw, True

    def shutdown(self):
        self.running = False


@pytest.mark.parametrize("cpus", [None, 64], ids=["fits", "too-big"])
def test_without_an_address_the_run_starts_a_local_ray_and_stops_it(monkeypatch, cpus):
    from hwsim.errors import ConfigError

    fake = FakeCluster({"CPU": 2.0})
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if cpus is None:
        executor = RayExecutor.connect(None, compute_device="cpu")
        assert executor.owned and fake.running
        executor.close()
    else:  # a task no node can run: the instance just started is stopped again
        with pytest.raises(ConfigError, match="--cpus-per-task 64: no node"):
            RayExecutor.connect(None, cpus_per_task=cpus, compute_device="cpu")
    assert fake.started["address"] == "local" and not fake.running


GPU_NODES = ({"CPU": 16.0, "GPU": 4.0}, {"CPU": 8.0})


@pytest.mark.parametrize("device,gpus,cpus,expected", [
    ("auto", None, None, (1.0, 1.0, "cuda")),  # the study runs on CUDA: a GPU per task
    ("cuda", 0.25, None, (1.0, 0.25, "cuda")),  # four tasks share a GPU
    ("auto", 2, 4, (4.0, 2.0, "cuda")),
    ("cpu", None, 8, (8.0, 0.0, "cpu")),  # never "auto" on a node whose GPUs it did not ask for
])
def test_task_size_on_a_gpu_cluster(device, gpus, cpus, expected):
    from hwsim.study.executors import _task_size

    cluster = FakeCluster(*GPU_NODES)
    size = _task_size(cluster, gpus, cpus, device)
    executor = RayExecutor(cluster, cpus=size[0], gpus=size[1], owned=False)
    assert (*size, executor.compute_device) == expected


@pytest.mark.parametrize("device,gpus,cpus,message", [
    ("auto", 8, None, "--gpus-per-task 8: no node of the Ray cluster has that many GPUs"),
    ("cpu", 1, None, "--gpus-per-task 1 with --compute-device cpu: the tasks would hold GPUs"),
    ("cuda", 0, None, "--compute-device cuda: give --gpus-per-task > 0"),
    ("auto", None, 32, "--cpus-per-task 32: no node of the Ray cluster has that many CPUs"),
])
def test_task_sizes_no_node_can_run(device, gpus, cpus, message):
    from hwsim.errors import ConfigError
    from hwsim.study.executors import _task_size

    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        _task_size(FakeCluster(*GPU_NODES), gpus, cpus, device)
