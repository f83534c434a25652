"""Hugging Face datasets on disk as inputs, read with pyarrow alone (the `datasets` package is not needed):

- a folder written by `Dataset.save_to_disk` (state.json, dataset_info.json, data-00000-of-00001.arrow: Arrow
  IPC streams, read in state.json's order);
- a folder of Parquet shards as the Hub stores them (data/train-00000-of-00002.parquet, ...; or
  default/train/0000.parquet), read in name order; a folder holding several splits is refused with the
  glob that picks one (`DIR/data/train-*.parquet`), which is accepted too.

A `ClassLabel` column (integer codes, with names in dataset_info.json or the Parquet schema's `huggingface`
metadata) is read as its label names, as `ds.features[col].int2str` shows them: the names are what a config's
task.labels lists and what `llmlabel audit` compares the given labels with."""

from __future__ import annotations

import glob as globmod
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError
from llmlabel.io.parquet_rows import parquet_batches_rows

_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}\.parquet$")
_GLOB = re.compile(r"[*?\[]")


def is_dataset_source(path: str | Path) -> bool:
    """A folder or a glob: inputs made of several files (a file whose name has glob characters is a file)."""
    p = Path(path)
    return p.is_dir() or (bool(_GLOB.search(str(path))) and not p.exists())


def source_files(path: str | Path) -> tuple[str, list[Path]]:
    """("arrow" | "parquet", the files in reading order) of a dataset folder or a glob of Parquet files."""
    spec = str(path)
    if _GLOB.search(spec):
        files = sorted(Path(f) for f in globmod.glob(spec, recursive=True) if Path(f).is_file())
        if not files:
            raise InputError(f"input {spec}: no file matches; check the pattern")
        if any(f.suffix.lower() != ".parquet" for f in files):
            raise InputError(f"input {spec}: a pattern must match .parquet files only")
        return "parquet", files
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        splits = _splits_of_dict(p)
        raise InputError(
            f"{p} holds a DatasetDict (splits: {', '.join(splits)}); give one split's folder, e.g. {p / splits[0]}"
        )
    if (p / "state.json").is_file():
        return "arrow", _arrow_files(p)
    files = sorted(f for f in p.rglob("*.parquet") if f.is_file() and not _hidden(f.relative_to(p)))
    if not files:
        raise InputError(
            f"{p} is a folder without a `save_to_disk` dataset or Parquet shards; give a .csv, .jsonl or "
            ".parquet file, or such a folder"
        )
    splits = sorted({_split(f.relative_to(p)) for f in files})
    if len(splits) > 1:
        raise InputError(f"{p} holds several splits ({', '.join(splits)}); give one, e.g. {_split_glob(p, files)}")
    return "parquet", files


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _split(rel: Path) -> str:
    """A shard's split: `train` of train-00000-of-00002.parquet, else its folder (default/train/0000.parquet)."""
    m = _SHARD.match(rel.name)
    return m["split"] if m else (str(rel.parent) if str(rel.parent) != "." else "")


def _split_glob(root: Path, files: list[Path]) -> str:
    first = files[0].relative_to(root)
    m = _SHARD.match(first.name)
    pattern = f"{m['split']}-*.parquet" if m else "*.parquet"
    return str(root / first.parent / pattern)


def _splits_of_dict(p: Path) -> list[str]:
    try:
        splits = json.loads((p / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
    except (OSError, ValueError):
        splits = []
    return [str(s) for s in splits] or sorted(d.name for d in p.iterdir() if d.is_dir())


def _arrow_files(p: Path) -> list[Path]:
    try:
        state = json.loads((p / "state.json").read_text(encoding="utf-8"))
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{p}/state.json is not a `save_to_disk` state file; save the dataset again") from None
    files = [p / n for n in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{p}: {missing[0].name} is missing; the saved dataset is incomplete")
    return files


def source_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of a dataset folder or glob, in order, one Arrow batch in memory at a time."""
    kind, files = source_files(path)
    if kind == "arrow":
        return _arrow_rows(files, class_labels(_json(files[0].parent / "dataset_info.json").get("features")))
    return _parquet_rows(files)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def class_labels(features: Any) -> dict[str, list[str]]:
    """{column: label names} of the ClassLabel columns in a `datasets` features description."""
    if not isinstance(features, dict):
        return {}
    return {
        str(col): [str(n) for n in f["names"]]
        for col, f in features.items()
        if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)
    }


def _named(rows: Iterable[dict[str, Any]], names: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    """ClassLabel codes as names (-1, "no label", as None; a code outside the names is kept as it is)."""
    for row in rows:
        for col, labels in names.items():
            v = row.get(col)
            if isinstance(v, int) and not isinstance(v, bool):
                row[col] = labels[v] if 0 <= v < len(labels) else (None if v == -1 else v)
        yield row


def _arrow_rows(files: list[Path], names: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    for f in files:
        try:
            with pa.memory_map(str(f)) as src:
                for batch in pa.ipc.open_stream(src):
                    yield from _named(batch.to_pylist(), names)
        except pa.ArrowInvalid as e:
            raise InputError(f"{f}: cannot read as an Arrow stream ({str(e).splitlines()[0]})") from None


def _parquet_rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise InputError(f"{f}: cannot read Parquet ({str(e).splitlines()[0]}); check the file") from None
        meta = (pf.schema_arrow.metadata or {}).get(b"huggingface")
        try:
            info = json.loads(meta) if meta else {}
        except ValueError:
            info = {}
        names = class_labels(((info.get("info") or {}) if isinstance(info, dict) else {}).get("features"))
        yield from _named(parquet_batches_rows(Path(f), pf.iter_batches(batch_size=4096)), names)


__all__ = ["is_dataset_source", "source_files", "source_rows"]
