"""The ``checkpoints/`` folder of a run: atomic checkpoint directories and a ``latest`` pointer.

Every file is written to a temporary name in the same directory, flushed, ``fsync``-ed and then
renamed over its final name (``os.replace`` is atomic on POSIX), so a reader sees either the old
file or the new one, never half of one. A checkpoint is a directory
``checkpoints/step_<N>/`` written the same way (built under a temporary name, renamed when
complete); ``checkpoints/latest.json`` is replaced only after the directory is complete. A process
killed in the middle of a save therefore leaves at worst a stale ``.tmp-*`` directory, which the
next save removes, and ``latest.json`` still names the previous complete checkpoint.

Plain data (``state.json``) is encoded by :func:`ebrl.agents.common.plain.to_plain` and read back by
:func:`decode`. Nothing in a checkpoint is unpickled when it is read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from ebrl.agents.common.plain import PlainDataError, from_plain
from ebrl.atomic import atomic_write, atomic_write_json, fsync_dir

FORMAT = 1
LATEST = "latest.json"
COMPLETE = "state.json"  # written last inside a checkpoint directory


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or not one of ebrl's."""


def decode(obj: Any) -> Any:
    """:func:`~ebrl.agents.common.plain.from_plain` for checkpoint data: an unknown encoding is a
    :class:`CheckpointError`."""
    try:
        return from_plain(obj)
    except PlainDataError as exc:
        raise CheckpointError(f"{exc} in checkpoint") from exc


class CheckpointDir:
    """The ``checkpoints/`` folder of a run: atomic checkpoint directories and the ``latest`` pointer.

    Args:
        root: the folder (created on the first save).
        keep: complete checkpoints kept (older ones are deleted after a new one is in place; >= 1).
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 2) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self.root = Path(root)
        self.keep = keep

    def save(
        self, step: int, files: Mapping[str, Callable[[IO[bytes]], None]], state: Mapping[str, Any]
    ) -> Path:
        """Write one checkpoint: every ``files[name](file)`` then ``state.json``; return its directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        name = f"step_{int(step):012d}"
        k = 0
        while (self.root / (name if k == 0 else f"{name}-{k}")).exists():
            k += 1
        name = name if k == 0 else f"{name}-{k}"
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            for file_name, write in files.items():
                atomic_write(tmp / file_name, write)
            atomic_write_json(tmp / COMPLETE, {"format": FORMAT, "step": int(step), **state})
            fsync_dir(tmp)
            final = self.root / name
            os.replace(tmp, final)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_json(self.root / LATEST, {"format": FORMAT, "name": name, "step": int(step)})
        self._prune(keep_name=name)
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoint directories, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob("step_*") if p.is_dir() and (p / COMPLETE).is_file()]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        """The checkpoint ``latest.json`` names, else the newest complete one, else None."""
        pointer = self.root / LATEST
        try:
            name = json.loads(pointer.read_text())["name"]
            path = self.root / name
            if (path / COMPLETE).is_file():
                return path
        except (OSError, ValueError, KeyError, TypeError):
            pass
        done = self.complete()
        return done[-1] if done else None

    def _prune(self, keep_name: str) -> None:
        done = [p for p in self.complete() if p.name != keep_name]
        for old in done[: max(len(done) - (self.keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)


def read_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """``state.json`` of a checkpoint directory, checked for ebrl's format."""
    path = Path(checkpoint) / COMPLETE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {checkpoint} is incomplete or corrupt: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(
            f"checkpoint {checkpoint} has format {found!r}; this ebrl reads format {FORMAT}"
        )
    return state
