"""The results store's schema version, its migration step, and closing on every exit path."""

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim.cli import cli
from hwsim.study.store import SCHEMA_VERSION, STORE_NAME, ModelKey, Store, StoreError

# The layout of stores of schema versions 0 to 2 (before remedies added the hwa and
# calib_size columns), as hwsim wrote it then.
V2_SCHEMA = """
CREATE TABLE cells (
    key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, arch TEXT NOT NULL, bn TEXT NOT NULL, seed INTEGER NOT NULL,
    bn_mode TEXT NOT NULL, preset TEXT NOT NULL, eta REAL, t REAL, repeat INTEGER NOT NULL,
    accuracy REAL NOT NULL, n_test INTEGER NOT NULL, engine TEXT NOT NULL,
    model_hash TEXT NOT NULL, preset_hash TEXT NOT NULL
);
CREATE TABLE models (
    key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, arch TEXT NOT NULL, bn TEXT NOT NULL, seed INTEGER NOT NULL,
    digital_accuracy REAL NOT NULL, n_test INTEGER NOT NULL, full_test_accuracy REAL,
    bn_layers INTEGER NOT NULL, checkpoint TEXT NOT NULL, checkpoint_sha256 TEXT NOT NULL,
    train_seconds REAL, model_hash TEXT NOT NULL
);
CREATE TABLE presets (name TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE grid (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key));
"""
V1_SCHEMA = V2_SCHEMA.replace(
    "CREATE TABLE grid (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key));", "")


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
        con.executescript(V1_SCHEMA)
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
        con.executescript(V1_SCHEMA)
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
    from hwsim.study.store import _MIGRATIONS

    assert sorted(_MIGRATIONS) == list(range(SCHEMA_VERSION))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_run_study_closes_the_store_on_every_exit(tmp_path, monkeypatch, exc):
    """An exception or Ctrl-C in the middle of a run leaves no open handle on the store."""
    import hwsim.study.units
    from hwsim.study import load_study, run_study

    study_file = tmp_path / "s.yaml"
    study_file.write_text("name: s\ndatasets: [{name: digits, epochs: 1}]\n"
                          "architectures: [cnn]\nbn: [bn]\npresets: [ideal]\ntimes: [1s]\n"
                          "repeats: 1\n")

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(hwsim.study.units, "train", fail)
    with pytest.raises(type(exc)):
        run_study(load_study(study_file), tmp_path / "run", progress=False, log=lambda m: None)
    store = tmp_path / "run" / STORE_NAME
    assert store.is_file() and open_fds_to(store) == []
    with Store(store) as s:  # and the run's timing was still recorded
        assert "last_run_seconds" in s.meta()["timing"]


def test_a_version_2_store_upgrades_and_reports_as_before(tmp_path):
    """A store written before remedies (schema 2: no hwa / calib_size columns) gains them with
    their defaults (standard training, not recalibrated) and reports exactly as a store with
    the same rows written today; it has no Remedies answer."""
    from report_store import make_store

    from hwsim.report import build_report
    from hwsim.report.answers import REMEDIES_QUESTION

    new = make_store(tmp_path / "new")
    old = tmp_path / "old" / STORE_NAME
    old.parent.mkdir()
    columns = {
        "cells": "key, dataset, arch, bn, seed, bn_mode, preset, eta, t, repeat, accuracy, "
                 "n_test, engine, model_hash, preset_hash",
        "models": "key, dataset, arch, bn, seed, digital_accuracy, n_test, full_test_accuracy, "
                  "bn_layers, checkpoint, checkpoint_sha256, train_seconds, model_hash",
        "presets": "name, hash", "meta": "key, value", "grid": "kind, key"}
    with connect(old) as con:
        con.executescript(V2_SCHEMA)
        con.execute("PRAGMA user_version = 2")
        con.execute("ATTACH DATABASE ? AS new", (str(new / STORE_NAME),))
        for table, cols in columns.items():
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM new.{table}")
        con.execute("DETACH DATABASE new")
    with Store(old) as store:
        assert store.schema_version == SCHEMA_VERSION
        cells = store.cells()
        assert cells and {(c["hwa"], c["calib_size"]) for c in cells} == {(0.0, None)}
        assert {m["hwa"] for m in store.models()} == {0.0}
        before = build_report(store)
    with Store(new / STORE_NAME) as store:
        today = build_report(store)
    assert before.verdicts == today.verdicts and before.verdicts
    assert before.answers == today.answers
    assert all(a.question != REMEDIES_QUESTION for answers in before.answers.values()
               for a in answers)
    assert not [f for f in before.figures if f.kind.startswith("remedy-")]
    # the upgraded store takes new rows with the remedy fields
    with Store(old) as store:
        key = ModelKey("cifar10", "resnet44", "bn", 0, hwa=0.06)
        store.add_model(key, digital_accuracy=0.9, n_test=10, full_test_accuracy=0.9,
                        bn_layers=43, checkpoint="c.pt", checkpoint_sha256="0" * 64,
                        train_seconds=1.0, model_hash="h")
        assert store.model(key)["hwa"] == 0.06
        assert store.model(ModelKey("cifar10", "resnet44", "bn", 0))["hwa"] == 0.0


def test_remedy_fields_leave_old_ids_alone():
    """Ids of standard-training models and of cells without recalibration are those of
    stores written before remedies; the remedy fields make new ids."""
    plain = ModelKey("digits", "cnn", "bn", 0)
    assert plain.id == "digits|cnn|bn|0"
    assert ModelKey("digits", "cnn", "bn", 0, hwa=0.06).id == "digits|cnn|bn|0|hwa=0.06"
    cell = plain.cell(bn_mode="keep", preset="pcm", eta=None, t=1.0, repeat=2,
                      model_hash="m", preset_hash="p")
    assert cell.id == "digits|cnn|bn|0|keep|pcm|-|1.0|2|m|p"
    recal = plain.cell(bn_mode="recal", preset="pcm", eta=None, t=1.0, repeat=2,
                       model_hash="m", preset_hash="p", calib_size=512)
    assert recal.id == "digits|cnn|bn|0|recal|pcm|-|1.0|2|m|p|calib=512"
