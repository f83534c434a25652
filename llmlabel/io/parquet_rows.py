"""Rows out of Parquet record batches with a bound on what they decode to (see below)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import InputError

# A Parquet file stores a repeated value once (in a column's dictionary) and points to it from every row, so a
# few KB can become gigabytes of Python strings once read out: 200 rows sharing one 10 MB string are 2 GB (a
# 1.4 KB file did that). Rows are read out in slices of at most _SLICE decoded bytes, and a file that decodes
# to more than _MAX_RATIO times its size (and over _FLOOR) is refused as what it is.
_SLICE = 64 * 2**20
_FLOOR = 512 * 2**20
_MAX_RATIO = 50


def _decoded_bytes(batch: Any) -> Any:
    """Each row's bytes of text and binary once decoded (dictionary columns counted per row, not once)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for col in batch.columns:
        t = col.type
        if pa.types.is_dictionary(t) and (
            pa.types.is_string(t.value_type)
            or pa.types.is_binary(t.value_type)
            or pa.types.is_large_string(t.value_type)
            or pa.types.is_large_binary(t.value_type)
        ):
            lengths = pc.binary_length(col.dictionary).take(col.indices)
        elif (
            pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        ):
            lengths = pc.binary_length(col)
        else:
            continue
        sizes += np.nan_to_num(lengths.to_numpy(zero_copy_only=False).astype("float64")).astype(np.int64)
    return sizes


def parquet_batches_rows(path: Path, batches: Any) -> Iterator[dict[str, Any]]:
    """The rows of Parquet record batches, read out a bounded slice at a time (see _SLICE)."""
    limit = max(_FLOOR, _MAX_RATIO * path.stat().st_size)
    total = 0
    for batch in batches:
        sizes = _decoded_bytes(batch)
        total += int(sizes.sum())
        if total > limit:
            raise InputError(
                f"{path}: its values decode to over {total // 2**20} MB, more than {_MAX_RATIO} times the file's "
                "size (one value repeated through the column's dictionary?); llmlabel refuses such a file: "
                "check where it came from, or rewrite it without the repeated values"
            )
        start = 0
        while start < batch.num_rows:
            end, acc = start, 0
            while end < batch.num_rows and (end == start or acc + sizes[end] <= _SLICE):
                acc += int(sizes[end])
                end += 1
            yield from batch.slice(start, end - start).to_pylist()
            start = end
