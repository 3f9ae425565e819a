"""The on-disk cache of generated datasets: arrays kept as ``.npz`` files under the cache folder, keyed by their
generator's settings.

The folder is ``$PATCHBENCH_CACHE``, else ``$XDG_CACHE_HOME/patchbench``, else ``~/.cache/patchbench`` (the XDG
base directory specification). An entry is named by a digest of its key, so changing any setting (or the
generator's source, which the caller puts in the key) reads a different file; stale entries are simply never read
again and may be deleted at any time. Processes that need the same entry at once take turns on an OS file lock
(``fcntl.flock``) beside it, so it is generated once; the file itself is written atomically (a temporary file in
the same folder, then a rename), so a reader never sees a torn one. When the folder cannot be written, the arrays
are generated and returned without caching.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

CACHE_ENV = "PATCHBENCH_CACHE"


def cache_dir() -> Path:
    """``$PATCHBENCH_CACHE``, else ``$XDG_CACHE_HOME/patchbench``, else ``~/.cache/patchbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "patchbench"


def source_digest(path: str | Path) -> str:
    """The SHA-256 of a source file, for cache keys that a change of the generator's code must invalidate."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def entry_path(name: str, key: dict[str, Any]) -> Path:
    """The file of the entry ``name`` for ``key`` (a JSON-serialisable mapping)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{name}-{digest}.npz"


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent or unreadable: generate again
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)  # numeric arrays only, as _read loads them
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(name: str, key: dict[str, Any],
                  generate: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of the entry ``name`` for ``key``: read from the cache, else ``generate()``-d and stored."""
    path = entry_path(name, key)
    arrays = _read(path)
    if arrays is not None:
        return arrays
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # the cache folder is not writable: generate without caching
        return generate()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process generates; the others wait, then read its file
        arrays = _read(path)
        if arrays is None:
            arrays = generate()
            with contextlib.suppress(OSError):
                _write(path, arrays)
        return arrays
    finally:
        os.close(lock)  # closing drops the lock
