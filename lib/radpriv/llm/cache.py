"""Persistent, crash-safe cache of LLM answers (SQLite in WAL mode).

One row per answer, keyed on the sha256 of the canonical JSON of
``(model_id, backend, prompt, schema, params)``: the model file's sha256 (or a server's
``endpoint|served_model``), the backend name, the exact prompt, the answer schema and the decoding
parameters. A re-run is served from the cache, and an interrupted run resumes where it stopped.

Every :meth:`AnswerCache.put` is its own transaction with ``synchronous=FULL``: once ``put``
returns the row is on disk, and a crash (even ``kill -9``) mid-run leaves only complete rows.
One instance is safe to share between threads; several processes may use the same file (SQLite
locking, with a busy timeout).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from radpriv import paths

#: bump when the meaning of a cached value changes, so old rows are not reused
CACHE_FORMAT = 1
_BUSY_TIMEOUT_MS = 60_000


class CacheError(RuntimeError):
    """The cache file cannot be opened or is not a radpriv answer cache."""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return obj.tolist()
    raise TypeError(f"cannot use a {type(obj).__name__} in an answer-cache key or value; "
                    "pass JSON data (str, numbers, lists, dicts)")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_jsonable)


def cache_key(model_id: str, backend: str, prompt: Any, schema: Any, params: Mapping[str, Any] | None) -> str:
    """sha256 (hex) of the canonical JSON of the inputs that determine an answer."""
    doc = {"format": CACHE_FORMAT, "model_id": str(model_id), "backend": str(backend), "prompt": prompt,
           "schema": schema, "params": dict(params or {})}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


class AnswerCache:
    """SQLite answer cache. ``AnswerCache()`` uses ``radpriv.paths.llm_cache_path()``."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else paths.llm_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        try:
            self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "model_id TEXT, backend TEXT, created REAL NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(CACHE_FORMAT),))
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path}: cannot open the LLM answer cache ({exc}). If the file is damaged, "
                             "delete it: answers will be recomputed.") from None
        self.journal_mode = str(mode).lower()

    # ---- keys

    @staticmethod
    def key(model_id: str, backend: str, prompt: Any, schema: Any, params: Mapping[str, Any] | None) -> str:
        return cache_key(model_id, backend, prompt, schema, params)

    # ---- access

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        try:
            return json.loads(row[0])
        except ValueError:  # cannot happen for rows written by put(); treat as a miss, loudly
            raise CacheError(f"{self.path}: row {key[:12]}… is not valid JSON; delete the cache file") from None

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM answers WHERE key = ?", (key,)).fetchone() is not None

    def put(self, key: str, value: Mapping[str, Any], model_id: str | None = None, backend: str | None = None) -> None:
        """Store (or replace) one answer; durable when this returns."""
        self.put_many([(key, value)], model_id=model_id, backend=backend)

    def put_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], model_id: str | None = None,
                 backend: str | None = None) -> None:
        """Store several answers in one transaction (all or none)."""
        rows = []
        now = time.time()
        for key, value in items:
            if not isinstance(value, Mapping):
                raise TypeError(f"cache values are dicts, got {type(value).__name__}")
            rows.append((str(key), canonical_json(dict(value)), model_id, backend, now))
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.writes += len(rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def stats(self) -> dict:
        """Rows on disk, this instance's hits/misses/writes, file and journal mode."""
        return {"path": str(self.path), "rows": len(self), "hits": self.hits, "misses": self.misses,
                "writes": self.writes, "journal_mode": self.journal_mode}

    def clear(self, model_id: str | None = None) -> int:
        """Delete all rows (or those of one model); returns how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            if model_id is None:
                n = self._db.execute("DELETE FROM answers").rowcount
            else:
                n = self._db.execute("DELETE FROM answers WHERE model_id = ?", (model_id,)).rowcount
            self._db.execute("COMMIT")
        return n

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):  # picklable for process pools: the copy reopens the same file
        return (AnswerCache, (str(self.path),))

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"
