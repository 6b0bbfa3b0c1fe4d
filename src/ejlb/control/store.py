"""SQLite persistence (WAL): tokens, reservations, senders, sessions, epochs, sync samples.

The service keeps its working state in memory and writes through here on every durable change;
high-rate state (worker reports, sync samples) is flushed in batches by the controller tick, so a
crash loses at most one period of reports. Row ids use AUTOINCREMENT so an id is never reused: a
token granted on a freed reservation can never reach a later one.

u64 ticks do not fit SQLite's signed INTEGER, so they are stored as decimal TEXT.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Iterable

from ejlb import sendstate

SCHEMA_VERSION = 1

TOTALS = sendstate.COLUMNS  # the seven SendState counters' columns, in the proto's order

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, parent_id INTEGER, name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    token_id INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    resource INTEGER NOT NULL, resource_id TEXT NOT NULL, level INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS grants_token ON grants(token_id);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, lb INTEGER NOT NULL UNIQUE, name TEXT NOT NULL,
    until REAL, ip_family INTEGER NOT NULL, strategy TEXT NOT NULL, token_id INTEGER,
    created REAL NOT NULL, sync_port INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS senders (
    reservation_id INTEGER NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    address TEXT NOT NULL, PRIMARY KEY (reservation_id, address));
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation_id INTEGER NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    name TEXT NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL, port_bits INTEGER NOT NULL,
    weight REAL NOT NULL, min_factor REAL NOT NULL, max_factor REAL NOT NULL,
    keep_lb_header INTEGER NOT NULL, demands TEXT NOT NULL, member_id INTEGER NOT NULL,
    token_id INTEGER, registered_at REAL NOT NULL, last_report REAL, is_ready INTEGER NOT NULL,
    fill REAL NOT NULL, control_signal REAL NOT NULL, dyn_weight REAL NOT NULL,
    {totals} removed_at REAL);
CREATE TABLE IF NOT EXISTS epochs (
    reservation_id INTEGER NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, boundary TEXT NOT NULL, calendar BLOB NOT NULL,
    PRIMARY KEY (reservation_id, seq));
CREATE TABLE IF NOT EXISTS sync_samples (
    reservation_id INTEGER NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
    recv_time REAL NOT NULL, event_number TEXT NOT NULL, rate INTEGER NOT NULL, src_id INTEGER NOT NULL);
""".replace("{totals}", "".join(f"{c} INTEGER NOT NULL DEFAULT 0, " for c in TOTALS))

SESSION_COLUMNS = (
    "id", "reservation_id", "name", "ip", "port", "port_bits", "weight", "min_factor", "max_factor",
    "keep_lb_header", "demands", "member_id", "token_id", "registered_at", "last_report", "is_ready",
    "fill", "control_signal", "dyn_weight", "removed_at",
)
# written by the controller's batched flush, as tuples in this order followed by the session id
HOT_SESSION_COLUMNS = ("last_report", "is_ready", "fill", "control_signal", "dyn_weight") + TOTALS


@dataclass
class Snapshot:
    """Everything in the database, as plain rows (dicts), for the service to rebuild its state."""

    tokens: list[dict] = field(default_factory=list)
    grants: list[dict] = field(default_factory=list)
    reservations: list[dict] = field(default_factory=list)
    senders: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


class Store:
    def __init__(self, path: str = ":memory:"):
        self.path = path
        # One connection shared by gRPC worker threads and the controller, serialised by a lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"db={path!r}: schema version {row[0]}, this ejlb needs {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _tx(self, statements: Iterable[tuple[str, tuple]]) -> list[int | None]:
        """Run statements in one transaction; returns each statement's lastrowid."""
        with self.transaction() as db:
            return [db.execute(sql, args).lastrowid for sql, args in statements]

    def snapshot(self) -> Snapshot:
        with self._lock:
            q = lambda sql: [dict(r) for r in self._db.execute(sql)]  # noqa: E731
            return Snapshot(
                tokens=q("SELECT * FROM tokens ORDER BY id"),
                grants=q("SELECT * FROM grants"),
                reservations=q("SELECT * FROM reservations ORDER BY id"),
                senders=q("SELECT * FROM senders"),
                sessions=q("SELECT * FROM sessions ORDER BY id"),
                epochs=q("SELECT * FROM epochs ORDER BY reservation_id, seq"),
                samples=q("SELECT * FROM sync_samples ORDER BY reservation_id, recv_time"),
            )

    # -- tokens ---------------------------------------------------------------------------------
    def add_token(self, parent_id: int | None, name: str, hash_: str, created_at: str,
                  grants: Iterable[tuple[int, str, int]], token_id: int | None = None) -> int:
        with self.transaction() as db:
            tid = db.execute("INSERT INTO tokens (id, parent_id, name, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                             (token_id, parent_id, name, hash_, created_at)).lastrowid
            db.executemany("INSERT INTO grants VALUES (?, ?, ?, ?)", [(tid, r, rid, lv) for r, rid, lv in grants])
        return tid

    def set_token_hash(self, token_id: int, hash_: str) -> None:
        self._tx([("UPDATE tokens SET hash=? WHERE id=?", (hash_, token_id))])

    def delete_tokens(self, ids: Iterable[int]) -> None:
        self._tx([("DELETE FROM tokens WHERE id=?", (i,)) for i in ids])

    # -- reservations ---------------------------------------------------------------------------
    def add_reservation(self, lb: int, name: str, until: float | None, ip_family: int, strategy: str,
                        created: float, sync_port: int, senders: Iterable[str]) -> int:
        with self.transaction() as db:
            rid = db.execute(
                "INSERT INTO reservations (lb, name, until, ip_family, strategy, token_id, created, sync_port)"
                " VALUES (?, ?, ?, ?, ?, NULL, ?, ?)", (lb, name, until, ip_family, strategy, created, sync_port)).lastrowid
            db.executemany("INSERT INTO senders VALUES (?, ?)", [(rid, a) for a in senders])
        return rid

    def update_reservation(self, rid: int, **cols) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        self._tx([(f"UPDATE reservations SET {sets} WHERE id=?", (*cols.values(), rid))])

    def delete_reservation(self, rid: int) -> None:
        self._tx([("DELETE FROM reservations WHERE id=?", (rid,))])

    def set_senders(self, rid: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        self._tx([("DELETE FROM senders WHERE reservation_id=? AND address=?", (rid, a)) for a in remove]
                 + [("INSERT OR IGNORE INTO senders VALUES (?, ?)", (rid, a)) for a in add])

    # -- sessions -------------------------------------------------------------------------------
    def add_session(self, row: dict) -> int:
        cols = [c for c in SESSION_COLUMNS if c != "id"]
        (sid,) = self._tx([(
            f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            tuple(_encode(c, row[c]) for c in cols))])
        return sid

    def update_session(self, sid: int, **cols) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        self._tx([(f"UPDATE sessions SET {sets} WHERE id=?", (*(_encode(k, v) for k, v in cols.items()), sid))])

    def update_sessions_hot(self, rows: Iterable[tuple]) -> None:
        """Batched flush of worker-report fields: tuples of HOT_SESSION_COLUMNS + (session id,)."""
        sets = ", ".join(f"{c}=?" for c in HOT_SESSION_COLUMNS)
        with self.transaction() as db:
            db.executemany(f"UPDATE sessions SET {sets} WHERE id=?", rows)

    def delete_sessions(self, ids: Iterable[int]) -> None:
        self._tx([("DELETE FROM sessions WHERE id=?", (i,)) for i in ids])

    # -- epochs and sync samples ----------------------------------------------------------------
    def add_epoch(self, rid: int, seq: int, boundary: int, calendar: bytes, keep: int) -> None:
        self._tx([
            ("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?)", (rid, seq, str(boundary), calendar)),
            ("DELETE FROM epochs WHERE reservation_id=? AND seq<=?", (rid, seq - keep)),
        ])

    def clear_epochs(self, rid: int) -> None:
        self._tx([("DELETE FROM epochs WHERE reservation_id=?", (rid,))])

    def replace_samples(self, rid: int, samples: Iterable[tuple[float, int, int, int]]) -> None:
        self._tx([("DELETE FROM sync_samples WHERE reservation_id=?", (rid,))]
                 + [("INSERT INTO sync_samples VALUES (?, ?, ?, ?, ?)", (rid, t, str(e), r, s))
                    for t, e, r, s in samples])


def _encode(col: str, value):
    if col == "demands":
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value
