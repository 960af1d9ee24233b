"""The results store: one SQLite file per study run, written transactionally.

Tables
------
``cells``     one Monte-Carlo sample: (dataset, arch, bn, seed, hwa, bn_mode, calib_size,
              preset, eta, t, repeat) -> accuracy. ``bn`` is ``"bn"``/``"no-bn"``;
              ``bn_mode`` is ``keep``, ``fold``, ``recal`` or ``none`` (a model without BN);
              ``hwa`` is the model's hardware-aware training noise (0: standard training);
              ``calib_size`` the BN recalibration images (NULL unless ``recal``); ``eta`` is
              NULL for presets without weight noise; ``t`` (seconds) is NULL for presets
              without drift.
``models``    one trained model: (dataset, arch, bn, seed, hwa) -> digital test accuracy on
              the evaluated test split, n_test, number of BN layers, checkpoint path and hash,
              training seconds.
``presets``   preset name -> hash of (resolved preset, engine) used by the current study.
``meta``      key -> JSON value: the study file, its settings, hwsim/aihwkit versions.
``grid``      the cell and model ids of the study as last run (``kind`` ``cell``/``model``).

A changed study must not mix stale results with new ones: every cell records the hash of its
model's training/evaluation settings (``model_hash``) and of its preset and engine
(``preset_hash``). Reading (:meth:`Store.cells`) returns only cells whose hashes match the
current ``models`` and ``presets`` rows; older cells stay in the file, unused. A narrowed
study (fewer repeats, times, etas, architectures, presets, BN modes or seeds) supersedes no
hash, so every run also records its grid (:meth:`Store.set_grid`), and reading returns only
the cells and models of that grid. A store written before grids were recorded has none: all
its cells with current hashes are read.

Each Monte-Carlo repeat's cells are committed in one transaction, so a process killed at
any moment leaves every finished repeat in the store and nothing half-written.

Schema versions
---------------
The layout's version is SQLite's ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A new store
is created at the current version. Opening an older store upgrades it in place, one step of
:data:`_MIGRATIONS` at a time, each in its own transaction; a store from a newer hwsim (a
higher version) is refused with a one-line :class:`StoreError`. Version 0 is a store written
before versions were recorded; its layout is version 1's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.errors import HwsimError

STORE_NAME = "results.sqlite"
# a study\'s diagnoses: RUN_DIR/diagnose/ID.json, listed in the meta key of the same name
DIAGNOSE_DIR = "diagnose"
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, arch TEXT NOT NULL, bn TEXT NOT NULL, seed INTEGER NOT NULL,
    bn_mode TEXT NOT NULL, preset TEXT NOT NULL, eta REAL, t REAL, repeat INTEGER NOT NULL,
    accuracy REAL NOT NULL, n_test INTEGER NOT NULL, engine TEXT NOT NULL,
    model_hash TEXT NOT NULL, preset_hash TEXT NOT NULL,
    hwa REAL NOT NULL DEFAULT 0, calib_size INTEGER
);
CREATE TABLE IF NOT EXISTS models (
    key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, arch TEXT NOT NULL, bn TEXT NOT NULL, seed INTEGER NOT NULL,
    digital_accuracy REAL NOT NULL, n_test INTEGER NOT NULL, full_test_accuracy REAL,
    bn_layers INTEGER NOT NULL, checkpoint TEXT NOT NULL, checkpoint_sha256 TEXT NOT NULL,
    train_seconds REAL, model_hash TEXT NOT NULL, hwa REAL NOT NULL DEFAULT 0,
    placement TEXT
);
CREATE TABLE IF NOT EXISTS presets (name TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grid (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key));
"""

# _MIGRATIONS[v]: SQL that turns a version-v store into a version-(v + 1) store. A schema
# change edits _SCHEMA (what new stores get), bumps SCHEMA_VERSION and adds its step here.
_MIGRATIONS: dict[int, str] = {
    0: "",  # unversioned stores already have version 1's tables
    # 2: the study's current grid, so that a narrowed study reports only what it asks for
    1: "CREATE TABLE IF NOT EXISTS grid (kind TEXT NOT NULL, key TEXT NOT NULL, "
       "PRIMARY KEY (kind, key))",
    # 3: remedies (issue 9): a model's HWA training noise, a recalibrated cell's calibration
    # size; existing rows are standard training (0) and not recalibrated (NULL)
    2: "ALTER TABLE cells ADD COLUMN hwa REAL NOT NULL DEFAULT 0; "
       "ALTER TABLE cells ADD COLUMN calib_size INTEGER; "
       "ALTER TABLE models ADD COLUMN hwa REAL NOT NULL DEFAULT 0",
    # 4: any model (issue 19): the layers kept digital with their MAC share, and what BN
    # folding leaves digital (JSON); NULL for models trained before
    3: "ALTER TABLE models ADD COLUMN placement TEXT",
}


def _model_row(row) -> dict:
    out = {k: row[k] for k in row.keys() if k != "key"}
    if out.get("placement") is not None:
        out["placement"] = json.loads(out["placement"])
    return out


class StoreError(HwsimError):
    """A results store this hwsim cannot use (newer schema, not a store, unreadable)."""


@dataclass(frozen=True)
class CellKey:
    """Identifies one cell of a study grid."""

    dataset: str
    arch: str
    bn: str  # "bn" | "no-bn"
    seed: int
    bn_mode: str  # "keep" | "fold" | "recal" | "none"
    preset: str
    eta: float | None
    t: float | None
    repeat: int
    model_hash: str = ""  # settings the model was trained and evaluated with
    preset_hash: str = ""  # resolved preset and engine
    hwa: float = 0.0  # the model's hardware-aware training noise (0: standard training)
    calib_size: int | None = None  # BN recalibration images (bn_mode "recal" only)

    @property
    def id(self) -> str:
        """The cell's identity; the remedy fields are added only when set, so that the ids of
        cells without them are those of stores written before remedies existed."""
        eta = "-" if self.eta is None else repr(float(self.eta))
        t = "-" if self.t is None else repr(float(self.t))
        return "|".join([self.dataset, self.arch, self.bn, str(self.seed), self.bn_mode,
                         self.preset, eta, t, str(self.repeat), self.model_hash,
                         self.preset_hash, *_remedy_parts(self.hwa, self.calib_size)])


@dataclass(frozen=True)
class ModelKey:
    dataset: str
    arch: str
    bn: str
    seed: int
    hwa: float = 0.0  # hardware-aware training noise (0: standard training)

    @property
    def id(self) -> str:
        return "|".join([self.dataset, self.arch, self.bn, str(self.seed),
                         *_remedy_parts(self.hwa, None)])

    def cell(self, **kw) -> CellKey:
        return CellKey(self.dataset, self.arch, self.bn, self.seed, hwa=self.hwa, **kw)


def _remedy_parts(hwa: float, calib_size: int | None) -> list[str]:
    return ([f"hwa={float(hwa)!r}"] if hwa else []) + (
        [f"calib={calib_size}"] if calib_size is not None else [])


class Store:
    """A results store at ``path`` (created if absent, upgraded if older).

    Use it as a context manager (``with Store(path) as store:``) so that it is closed on
    every exit path.

    Raises:
        StoreError: written by a newer hwsim, or not a results store.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._open_schema()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{self.path}: not a usable hwsim results store ({e})") from None
        except BaseException:
            self._db.close()
            raise
        self._db.isolation_level = ""  # back to transactions opened by `with self._db`

    def _open_schema(self) -> None:
        """Create the tables of a new store, or upgrade an older one to SCHEMA_VERSION."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # one writer at a time decides and applies the layout
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer hwsim (store schema version {version}; "
                    f"this hwsim reads up to {SCHEMA_VERSION}): upgrade hwsim, or use another "
                    "run folder")
            empty = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if empty:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            elif db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cells'"
                            ).fetchone() is None:
                raise StoreError(f"{self.path}: an SQLite file, but not an hwsim results store")
            else:
                for v in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[v].split(";"):
                        if statement.strip():
                            db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> Store:
        """The store of run folder ``run_dir``; StoreError if there is none."""
        path = Path(run_dir) / STORE_NAME
        if not path.is_file():
            raise StoreError(f"{run_dir}: no results store ({STORE_NAME}) in this folder; "
                             "run 'hwsim study run STUDY.yaml --out FOLDER' first")
        return cls(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def add_cells(self, cells: Iterable[tuple[CellKey, float, int, str]]) -> None:
        """Insert (key, accuracy, n_test, engine) rows in one transaction (replacing equal keys)."""
        rows = [(k.id, k.dataset, k.arch, k.bn, k.seed, k.bn_mode, k.preset, k.eta, k.t,
                 k.repeat, acc, n, engine, k.model_hash, k.preset_hash, k.hwa, k.calib_size)
                for k, acc, n, engine in cells]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO cells (key, dataset, arch, bn, seed, bn_mode, preset, "
                "eta, t, repeat, accuracy, n_test, engine, model_hash, preset_hash, hwa, "
                "calib_size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def add_model(self, key: ModelKey, *, digital_accuracy: float, n_test: int,
                  full_test_accuracy: float | None, bn_layers: int, checkpoint: str,
                  checkpoint_sha256: str, train_seconds: float | None,
                  model_hash: str = "", placement: dict | None = None) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO models (key, dataset, arch, bn, seed, digital_accuracy, "
                "n_test, full_test_accuracy, bn_layers, checkpoint, checkpoint_sha256, "
                "train_seconds, model_hash, hwa, placement) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key.id, key.dataset, key.arch, key.bn, key.seed, digital_accuracy, n_test,
                 full_test_accuracy, bn_layers, checkpoint, checkpoint_sha256, train_seconds,
                 model_hash, key.hwa, None if placement is None else json.dumps(placement)))

    def set_preset_hashes(self, hashes: dict[str, str]) -> None:
        """Record the (preset, engine) hashes of the current study."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO presets VALUES (?, ?)",
                                 list(hashes.items()))

    def set_grid(self, models: Iterable[ModelKey], cells: Iterable[CellKey]) -> None:
        """Record the study's current grid, replacing the previous one (one transaction)."""
        rows = [("model", m.id) for m in models] + [("cell", c.id) for c in cells]
        with self._db:
            self._db.execute("DELETE FROM grid")
            self._db.executemany("INSERT OR IGNORE INTO grid VALUES (?, ?)", rows)

    def set_meta(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------ reading

    def done_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM cells")}

    def cells(self, *, current_only: bool = True) -> list[dict]:
        """Cells as dicts (columns of ``cells`` without ``key``), in grid order.

        With ``current_only``, only the cells of the recorded grid, and of those only the ones
        whose model and preset settings are current (cells without a recorded model or preset
        are kept).
        """
        grid = " WHERE key IN (SELECT key FROM grid WHERE kind = 'cell')" if (
            current_only and self._has_grid()) else ""
        cur = self._db.execute(f"SELECT * FROM cells{grid} ORDER BY dataset, arch, bn, seed, "
                               "hwa, bn_mode, preset, eta, t, repeat")
        rows = [{k: row[k] for k in row.keys() if k != "key"} for row in cur]
        if not current_only:
            return rows
        models = {(m["dataset"], m["arch"], m["bn"], m["seed"], m["hwa"]): m["model_hash"]
                  for m in self.models(current_only=False)}
        presets = dict(self._db.execute("SELECT name, hash FROM presets").fetchall())
        return [
            r for r in rows
            if models.get((r["dataset"], r["arch"], r["bn"], r["seed"], r["hwa"]),
                          r["model_hash"])
            == r["model_hash"] and presets.get(r["preset"], r["preset_hash"]) == r["preset_hash"]
        ]

    def models(self, *, current_only: bool = True) -> list[dict]:
        """Trained models as dicts; with ``current_only``, those of the recorded grid."""
        grid = " WHERE key IN (SELECT key FROM grid WHERE kind = 'model')" if (
            current_only and self._has_grid()) else ""
        cur = self._db.execute(f"SELECT * FROM models{grid} ORDER BY dataset, arch, bn, seed, "
                               "hwa")
        return [_model_row(row) for row in cur]

    def _has_grid(self) -> bool:
        return self._db.execute("SELECT 1 FROM grid LIMIT 1").fetchone() is not None

    def model(self, key: ModelKey) -> dict | None:
        row = self._db.execute("SELECT * FROM models WHERE key = ?", (key.id,)).fetchone()
        return None if row is None else _model_row(row)

    def meta(self) -> dict[str, Any]:
        return {row[0]: json.loads(row[1]) for row in self._db.execute("SELECT * FROM meta")}
