"""Weights & Biases glue for SB3: a logger output format, a fail-safe run set-up, an offline reader.

SB3's ``WandbCallback`` logs config and checkpoints but no training scalars (those usually go via
tensorboard). :class:`WandbOutputFormat` is an SB3 ``KVWriter``: every ``logger.record`` scalar
(``train/``, ``rollout/``, ``sampler/``, ``eval/``) reaches ``wandb.log(..., step=num_timesteps)``
with no tensorboard in between.

W&B must never cost a training run: without an account or network the run is offline
(``wandb sync`` later), and any W&B exception is turned into one warning after which the local
logs (CSV, stdout) carry on alone.

wandb 0.31 keeps an offline run only in ``run-*.wandb`` (a LevelDB-style log of protobuf
``Record``s) and ships no public reader; :func:`read_wandb_run` parses that log. It supports the
record format of wandb 0.19-0.3x (the range pinned in pyproject.toml).
"""

from __future__ import annotations

import json
import os
import struct
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter, Logger

# Layout of the log file (wandb/sdk/internal/datastore.py in wandb <= 0.2x, unchanged since):
# a 7-byte file header "<4sHB" (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of records,
# each with a 7-byte header "<IHB" (crc32, length, type). Records too long for a block are split
# FIRST/MIDDLE/LAST; a block tail shorter than a header is zero padding.
_FILE_HEADER = struct.Struct("<4sHB")
_REC_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class WandbOutputFormat(KVWriter):
    """SB3 logger output: every scalar of each ``logger.dump(step)`` goes to ``wandb.log``.

    Args:
        run: the live ``wandb`` run (from :func:`init_wandb`).

    A W&B error disables this writer with one warning; training and the other writers carry on.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self._failed = False

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        if self._failed:
            return
        data = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key) or ()
            if "wandb" in excluded:
                continue
            if isinstance(value, (int, float, np.integer, np.floating, bool)):
                data[key] = float(value)
            elif isinstance(value, np.ndarray) and value.size == 1:
                data[key] = float(value.item())
        if not data:
            return
        try:
            self.run.log(data, step=int(step))
        except Exception as exc:  # W&B must never stop training
            self._failed = True
            warnings.warn(f"W&B logging failed ({exc!r}); continuing with the local logs only", stacklevel=2)

    def close(self) -> None:
        pass


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def init_wandb(
    config: Mapping[str, Any], project: str, name: str, directory: str | os.PathLike[str],
    run_id: str | None = None, group: str | None = None, tags: Sequence[str] = (),
    job_type: str | None = None,
) -> Any | None:
    """Start a W&B run, offline unless credentials exist or ``WANDB_MODE`` says otherwise.

    ``run_id``: continue that run (``ebrl train --resume``: the same id, ``resume="allow"``).
    ``group``, ``tags``, ``job_type``: W&B's run grouping (``ebrl train`` passes the env id, the
    algorithm and sampler, and ``"train"``), so that runs can be compared in the W&B UI.

    Returns the run, or None (with one warning) when W&B is disabled or fails to start, so that
    the caller trains on with local logs.
    """
    mode = os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
    if mode == "disabled":
        warnings.warn("WANDB_MODE=disabled: --track logs nothing to W&B", stacklevel=2)
        return None
    try:
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=project,
            name=name,
            config=dict(config),
            dir=str(directory),
            mode=mode,
            reinit="finish_previous",
            group=group,
            tags=list(tags) or None,
            job_type=job_type,
            **({"id": run_id, "resume": "allow"} if run_id else {}),
        )
    except Exception as exc:
        warnings.warn(f"W&B could not start ({exc!r}); training with local logs only", stacklevel=2)
        return None


def attach(logger: Logger, run: Any) -> None:
    """Add a :class:`WandbOutputFormat` for ``run`` to an SB3 logger."""
    logger.output_formats.append(WandbOutputFormat(run))


def finish_wandb(run: Any, images: Mapping[str, str], model_path: str | None) -> str | None:
    """Log the plots as images and the model as an artifact, then finish the run.

    Returns the ``wandb sync`` command for an offline run (None for online runs or on failure).
    """
    try:
        import wandb

        if images:
            run.log({f"plots/{k}": wandb.Image(v) for k, v in images.items()})
        if model_path and Path(model_path).exists():
            art = wandb.Artifact(f"model-{run.id}", type="model")
            art.add_file(model_path)
            run.log_artifact(art)
        offline = run.settings.mode == "offline" or getattr(run.settings, "_offline", False)
        run_dir = Path(run.dir).parent
        run.finish()
        return f"wandb sync {run_dir}" if offline else None
    except Exception as exc:
        warnings.warn(f"W&B finish failed ({exc!r}); the local logs are complete", stacklevel=2)
        return None


# ----------------------------------------------------------------------------- offline reader


def _iter_chunks(data: bytes) -> Iterator[bytes]:
    """Yield the payload of each record of a W&B LevelDB-style log (checksums verified)."""
    if len(data) < _FILE_HEADER.size:
        raise ValueError("not a W&B run file: shorter than its header")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"not a W&B run file (header {ident!r}, magic {magic:#x}, version {version})")
    pos, pending = _FILE_HEADER.size, b""
    while pos + _REC_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _REC_HEADER.size:
            pos += left_in_block
            continue
        crc, length, kind = _REC_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding / unwritten tail
            pos += left_in_block
            continue
        payload = data[pos + _REC_HEADER.size : pos + _REC_HEADER.size + length]
        if len(payload) < length:
            break  # truncated tail of a run still being written
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"W&B run file: bad checksum at byte {pos}")
        pos += _REC_HEADER.size + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _item_value(item: Any) -> Any:
    for name in ("value_json", "json"):
        text = getattr(item, name, "")
        if text:
            return json.loads(text)
    for name in ("number", "integer", "boolean", "text"):
        if hasattr(item, "HasField") and name in item.DESCRIPTOR.fields_by_name and item.HasField(name):
            return getattr(item, name)
    return None


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class WandbRunRecords:
    """What an offline run holds: config, metric history (one dict per step), summary, artifacts."""

    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    group: str = ""
    tags: list[str] = field(default_factory=list)
    job_type: str = ""

    @property
    def metric_names(self) -> set[str]:
        """Every metric name logged in the run, sorted."""
        return {k for row in self.history for k in row if not k.startswith("_")}


def read_wandb_run(path: str | os.PathLike[str], timeout: float = 0.0) -> WandbRunRecords:
    """Parse ``run-*.wandb`` (or the offline run directory holding it) into :class:`WandbRunRecords`.

    ``run.finish()`` can return before W&B's service process has flushed the file (seen with
    wandb 0.31 on a loaded machine: only the 7-byte header on disk); with ``timeout`` > 0 the file
    is re-read until it holds the run's ``exit`` record or ``timeout`` seconds have passed.
    Config values arrive as W&B stores them (``{"value": ...}`` wrappers removed).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"no run-*.wandb file in {path}")
        path = files[0]
    deadline = time.monotonic() + timeout
    while True:
        out, complete = _parse(path.read_bytes())
        if complete or time.monotonic() >= deadline:
            return out
        time.sleep(0.2)


def _parse(data: bytes) -> tuple[WandbRunRecords, bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    out, complete = WandbRunRecords(), False

    def add_config(items: Any) -> None:
        for item in items:
            value = _item_value(item)
            if isinstance(value, dict) and set(value) == {"value"}:
                value = value["value"]
            out.config[_item_key(item)] = value

    for chunk in _iter_chunks(data):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out.history.append({_item_key(i): _item_value(i) for i in rec.history.item})
        elif kind == "config":
            add_config(rec.config.update)
        elif kind == "run":
            add_config(rec.run.config.update)
            out.group, out.tags, out.job_type = rec.run.run_group, list(rec.run.tags), rec.run.job_type
        elif kind == "summary":
            out.summary.update({_item_key(i): _item_value(i) for i in rec.summary.update})
        elif kind == "artifact":
            out.artifacts.append(rec.artifact.name)
        elif kind == "exit":
            complete = True
    out.config.pop("_wandb", None)
    return out, complete
