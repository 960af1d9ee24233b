"""The results store's schema version, its migration step, and closing on every exit path."""

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim.cli import cli
from hwsim.store import _SCHEMA, SCHEMA_VERSION, STORE_NAME, ModelKey, Store, StoreError


def connect(path: Path):
    """A connection that is closed after its block (sqlite3's own `with` only commits)."""
    return closing(sqlite3.connect(path, isolation_level=None))


def user_version(path: Path) -> int:
    with connect(path) as con:
        return con.execute("PRAGMA user_version").fetchone()[0]


def open_fds_to(path: Path) -> list[str]:
    """This process's open file descriptors on ``path`` (or its -wal/-shm files)."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            fds.append(target)
    return fds


def add_one_model(store: Store) -> None:
    store.add_model(ModelKey("digits", "cnn", "bn", 0), digital_accuracy=0.9, n_test=10,
                    full_test_accuracy=0.9, bn_layers=3, checkpoint="c.pt",
                    checkpoint_sha256="0" * 64, train_seconds=1.0, model_hash="h")


def test_a_new_store_records_its_schema_version(tmp_path):
    with Store(tmp_path / STORE_NAME) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert user_version(tmp_path / STORE_NAME) == SCHEMA_VERSION


def test_an_unversioned_store_of_todays_layout_keeps_working(tmp_path):
    """A store written before versions existed (user_version 0) opens, reads, and is upgraded."""
    path = tmp_path / STORE_NAME
    with connect(path) as con:  # what hwsim wrote before schema versions
        con.executescript(_SCHEMA)
        con.execute("INSERT INTO meta VALUES ('engine', '\"fast\"')")
    assert user_version(path) == 0
    with Store(path) as store:
        assert store.meta() == {"engine": "fast"}
        add_one_model(store)
        assert [m["arch"] for m in store.models()] == ["cnn"]
    assert user_version(path) == SCHEMA_VERSION


def test_a_store_written_before_grids_gains_the_grid_table(tmp_path):
    """Version 0/1 stores had no grid table: the upgrade adds it, and every cell still reads."""
    path = tmp_path / STORE_NAME
    with connect(path) as con:
        con.executescript(_SCHEMA.replace(
            "CREATE TABLE IF NOT EXISTS grid (kind TEXT NOT NULL, key TEXT NOT NULL, "
            "PRIMARY KEY (kind, key));", ""))
        assert con.execute("SELECT 1 FROM sqlite_master WHERE name = 'grid'").fetchone() is None
    with Store(path) as store:
        add_one_model(store)
        assert [m["arch"] for m in store.models()] == ["cnn"]  # no grid recorded: all models
        store.set_grid([], [])
    assert user_version(path) == SCHEMA_VERSION


def test_a_store_from_a_newer_hwsim_is_refused_in_one_line(tmp_path):
    path = tmp_path / STORE_NAME
    with Store(path) as store:
        add_one_model(store)
    with connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=rf"written by a newer hwsim \(store schema version "
                                         rf"{SCHEMA_VERSION + 1}; this hwsim reads up to "
                                         rf"{SCHEMA_VERSION}\)"):
        Store(path)
    assert open_fds_to(path) == []
    for args in (["study", "status", str(tmp_path)], ["report", str(tmp_path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "newer hwsim" in lines[0]
    assert user_version(path) == SCHEMA_VERSION + 1  # left as it was


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""], ids=["garbage", "empty"])
def test_a_file_that_is_not_a_store(tmp_path, content):
    path = tmp_path / STORE_NAME
    path.write_bytes(content)
    if content:
        with pytest.raises(StoreError, match="not a usable hwsim results store"):
            Store(path)
    else:  # an empty file is an empty SQLite database: it becomes a new store
        with Store(path) as store:
            assert store.schema_version == SCHEMA_VERSION


def test_an_sqlite_file_of_another_program_is_refused(tmp_path):
    path = tmp_path / STORE_NAME
    with connect(path) as con:
        con.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(StoreError, match="an SQLite file, but not an hwsim results store"):
        Store(path)


def test_the_migration_steps_cover_every_version():
    from hwsim.store import _MIGRATIONS

    assert sorted(_MIGRATIONS) == list(range(SCHEMA_VERSION))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_run_study_closes_the_store_on_every_exit(tmp_path, monkeypatch, exc):
    """An exception or Ctrl-C in the middle of a run leaves no open handle on the store."""
    import hwsim.train
    from hwsim.study import load_study, run_study

    study_file = tmp_path / "s.yaml"
    study_file.write_text("name: s\ndatasets: [{name: digits, epochs: 1}]\n"
                          "architectures: [cnn]\nbn: [bn]\npresets: [ideal]\ntimes: [1s]\n"
                          "repeats: 1\n")

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(hwsim.train, "train", fail)
    with pytest.raises(type(exc)):
        run_study(load_study(study_file), tmp_path / "run", progress=False, log=lambda m: None)
    store = tmp_path / "run" / STORE_NAME
    assert store.is_file() and open_fds_to(store) == []
    with Store(store) as s:  # and the run's timing was still recorded
        assert "last_run_seconds" in s.meta()["timing"]
