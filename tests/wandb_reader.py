"""Reads W&B offline runs back from their `.wandb` transaction logs, so tests can check what a run recorded.

wandb 0.31 ships no Python reader (the old `wandb.sdk.internal.datastore` is gone; wandb-core writes the file), so
this decodes the format directly: a 7-byte header (':W&B', magic 0xBEE1, version 0), then LevelDB-log framing
(32 KiB blocks; each chunk has a CRC32 of its type byte and data, a length and a type: full, first, middle, last)
around serialized `wandb_internal_pb2.Record` protobufs. Checksums are verified.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfplay.tracking import offline_run_directories

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT, FILE_MAGIC, FILE_VERSION = b":W&B", 0xBEE1, 0
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32768
CHUNK_FULL, CHUNK_FIRST, CHUNK_MIDDLE, CHUNK_LAST = 1, 2, 3, 4


def read_records(wandb_file: str | Path) -> Iterator[Any]:
    """Every `Record` in one `.wandb` file, in write order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(wandb_file).read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (FILE_IDENT, FILE_MAGIC, FILE_VERSION):
        raise ValueError(f"{wandb_file}: not a W&B transaction log (header {ident!r} {magic:#x} v{version})")
    position, pending = FILE_HEADER.size, b""
    while position + CHUNK_HEADER.size <= len(data):
        space_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if space_in_block < CHUNK_HEADER.size:  # block trailer padding
            position += space_in_block
            continue
        checksum, length, chunk_type = CHUNK_HEADER.unpack_from(data, position)
        if length == 0 and chunk_type == 0:  # zero padding to the end of the block
            position += space_in_block
            continue
        chunk = data[position + CHUNK_HEADER.size: position + CHUNK_HEADER.size + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([chunk_type]))) != checksum:
            raise ValueError(f"{wandb_file}: checksum mismatch at byte {position}")
        position += CHUNK_HEADER.size + length
        pending = chunk if chunk_type in (CHUNK_FULL, CHUNK_FIRST) else pending + chunk
        if chunk_type in (CHUNK_FULL, CHUNK_LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def complete_records(wandb_file: str | Path, timeout: float = 15.0) -> list[Any]:
    """The records of one piece once its `exit` record is written, or what is there after `timeout` s (a killed
    process's piece never gets one). wandb-core 0.31 writes an offline piece out after `finish()` has returned: for
    a moment the file holds only its 7-byte header, or part of a chunk."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(read_records(wandb_file))
        except ValueError:  # a chunk half written
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline or any(record.WhichOneof("record_type") == "exit" for record in records):
                return records
        time.sleep(0.1)


def _item_key(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _items_to_dict(items: Any) -> dict[str, Any]:
    """History/summary items -> a dict; nested keys (a table's fields) become nested dicts."""
    result: dict[str, Any] = {}
    for item in items:
        *parents, leaf = _item_key(item)
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(item.value_json)  # W&B writes NaN as the token NaN, which json.loads accepts
    return result


def offline_run_files(run_dir: str | Path, run_id: str | None = None) -> list[Path]:
    """The `.wandb` files of the offline runs under RUN_DIR/wandb (one per process of a resumed run), oldest first."""
    return [file for directory in offline_run_directories(run_dir, run_id)
            for file in sorted(directory.glob("run-*.wandb"))]


def read_offline_history(run_dir: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Each logged step's dict (`_step` included) across all offline pieces of the run(s), in order."""
    return [_items_to_dict(record.history.item)
            for file in offline_run_files(run_dir, run_id)
            for record in complete_records(file) if record.WhichOneof("record_type") == "history"]


def read_offline_run_ids(run_dir: str | Path) -> list[str]:
    """The run id in each offline piece's run record, oldest first (equal ids: a resumed run)."""
    return [record.run.run_id
            for file in offline_run_files(run_dir)
            for record in complete_records(file) if record.WhichOneof("record_type") == "run"]


def read_offline_config(run_dir: str | Path) -> dict[str, Any]:
    """The run config as recorded (latest value per top-level key, plus W&B's own `_wandb` entry)."""
    config: dict[str, Any] = {}
    for file in offline_run_files(run_dir):
        for record in complete_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update(_items_to_dict(record.run.config.update))
            elif kind == "config":
                config.update(_items_to_dict(record.config.update))
    return config
