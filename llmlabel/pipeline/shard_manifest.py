"""What a finished `--shard I/N` run leaves beside its output (OUTPUT.shard.json) for `llmlabel merge`.

The shard's fingerprint (input and answer settings, io.output.PartFile's meta) lets the merge refuse shards of
different inputs or configs; the judges, labels, mode, aggregation and gold let it re-aggregate without the
config; and each row's position in the input lets it write the rows in input order, as one run would."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmlabel.config import Config
from llmlabel.errors import InputError
from llmlabel.io.files import atomic_write
from llmlabel.io.output import PartFile
from llmlabel.io.paths import shard_path
from llmlabel.io.shard_spec import Shard

VERSION = 1


def _pack(positions: list[int]) -> str:
    """Increasing positions as zlib-compressed deltas (a byte or two a row), base64 for JSON."""
    deltas = array("q", (b - a for a, b in zip([-1, *positions], positions)))
    return base64.b64encode(zlib.compress(deltas.tobytes())).decode()


def unpack(packed: str) -> list[int]:
    deltas = array("q")
    deltas.frombytes(zlib.decompress(base64.b64decode(packed)))
    out, pos = [], -1
    for d in deltas:
        pos += d
        out.append(pos)
    return out


def save_shard(
    output: Path,
    part: PartFile,
    shard: Shard,
    limit: int | None,
    names: list[str],
    labels: list[str],
    kind: str,
    cfg: Config,
    batch_calibrated: Mapping[str, Mapping[str, float] | None] | None = None,
) -> None:
    """Record a finished shard (called before its part file goes)."""
    positions = list(part.positions())
    order = id_order(json.loads(raw)["id"] for raw in part.ordered_raw())
    meta = {
        "version": VERSION,
        "shard": [shard.index, shard.count],
        "fingerprint": part.meta(),
        "limit": limit,
        "rows": len(positions),
        "judges": names,
        "labels": labels,
        "mode": kind,
        "aggregate": cfg.aggregate,
        # judges the merge batch-calibrates over every shard's rows, each with its content-free distribution
        "batch_calibrated": dict(batch_calibrated or {}),
        "set_policy": {"threshold": cfg.task.label_threshold, "allow_empty": cfg.task.allow_empty},
        "gold": str(Path(cfg.gold).resolve()) if cfg.gold else None,
        "id_column": cfg.task.id_column,
        "positions": _pack(positions),
        "ids": order,
    }
    atomic_write(shard_path(output), json.dumps(meta))


class IdOrder:
    """A digest of row ids in the order a shard's output has them: a merge checks the rows are still in that
    order (a shard output sorted or edited by hand would put rows at other rows' positions)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, rid: str) -> None:
        self._h.update(rid.encode("utf-8", "surrogatepass") + b"\0")

    def digest(self) -> str:
        return self._h.hexdigest()[:32]


def id_order(ids: Iterable[str]) -> str:
    order = IdOrder()
    for rid in ids:
        order.add(rid)
    return order.digest()


def load_shard(output: Path) -> dict[str, Any]:
    """A shard output's record, or one clear line saying why it is not a finished shard."""
    path = shard_path(output)
    if not output.is_file():
        raise InputError(f"{output} not found; give the outputs of finished `llmlabel label --shard I/N` runs")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(
            f"{output} is not a finished shard output (no readable {path.name} beside it); label it with "
            "`llmlabel label IN -c CFG -o OUT --shard I/N` and let the run finish"
        ) from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise InputError(f"{path}: not a shard record this llmlabel can read; label the shard again")
    return meta


def unsharded(fingerprint: dict[str, Any] | None) -> dict[str, Any]:
    """A shard's fingerprint without its shard number: equal for every shard of one job."""
    fp = dict(fingerprint or {})
    fp["answers"] = {k: v for k, v in (fp.get("answers") or {}).items() if k != "shard"}
    return fp
