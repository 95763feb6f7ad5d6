"""Read back a wandb run file (`run-<id>.wandb`) without the network: history, config, summary.

wandb writes every record of a run to one append-only file: a 7-byte header
(":W&B", magic 0xBEE1, version 0) and then LevelDB-log framing (32 KiB
blocks; each chunk a 7-byte header of CRC32, little-endian length, and type
FULL/FIRST/MIDDLE/LAST) around protobuf `Record` messages from
`wandb.proto.wandb_internal_pb2`. wandb itself no longer ships a Python
reader, so `make wandb-test` and the tests use this one to prove what an
offline run recorded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(Exception):
    pass


def chunks(path: str | Path):
    """The raw record payloads of a .wandb file, in order."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise WandbFileError(f"{path}: not a wandb run file (bad header)")
    pos, pending = len(HEADER), b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding at the end of a block or file
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""
        else:
            raise WandbFileError(f"{path}: unknown chunk type {kind} at byte {pos}")


def read(path: str | Path) -> dict:
    """{"run": {...}, "config": {...}, "history": [{...}], "summary": {...}} of one run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"run": {}, "config": {}, "history": [], "summary": {}}
    for payload in chunks(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out["run"] = {"id": r.run_id, "name": r.display_name, "project": r.project, "group": r.run_group}
            out["config"].update(_items(r.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
    out["config"] = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in out["config"].items()}
    return out


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def find_runs(directory: str | Path) -> list[Path]:
    """Every run file below a wandb directory (`<dir>/wandb/*run-*/run-*.wandb`), oldest first."""
    return sorted(Path(directory).glob("**/run-*.wandb"))
