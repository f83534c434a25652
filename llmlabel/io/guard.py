"""The one check of what a command may write against what it reads: no output, sidecar, report or model file
may be the input, the config, its gold: file, task.examples_file or a prompt template (writing it would destroy
an input, silently, and after paying). Every command that writes a file calls `check_output` before any work."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from llmlabel.errors import InputError
from llmlabel.io import paths
from llmlabel.io.rows import input_format

if TYPE_CHECKING:
    from llmlabel.config import Config

Read = tuple[Path, str]  # a file a command reads, and how the user knows it ("the config's gold: file")

# Every file written beside an output (io.paths), each a path an input must not have.
SIDECARS = (
    paths.PART,
    paths.PART + ".json",  # the part file's fingerprint (io.output.PartFile.meta_path)
    paths.LOCK,
    paths.ERRORS,
    paths.LEDGER,
    paths.LEDGER_LOG,
    paths.EVAL,
    paths.AUDIT_JUDGES,
    paths.AUDIT_SUMMARY,
    paths.SHARD,
    paths.BATCH,
)


def config_reads(cfg: Config | None) -> list[Read]:
    """The files a run of `cfg` reads besides its input: the config itself (when loaded from a file), gold:,
    task.examples_file and the templates under prompts_dir."""
    if cfg is None:
        return []
    out: list[Read] = []
    if cfg.source:
        out.append((Path(cfg.source), "the config file"))
    if cfg.gold:
        out.append((Path(cfg.gold), "the config's gold: file"))
    if cfg.task.examples_file:
        out.append((Path(cfg.task.examples_file), "the config's task.examples_file"))
    if cfg.prompts_dir and os.path.isdir(cfg.prompts_dir):
        out += [(p, "a prompt template of prompts_dir") for p in Path(cfg.prompts_dir).rglob("*") if p.is_file()]
    return out


def inputs(*given: str | Path | None, what: str = "the input file") -> list[Read]:
    return [(Path(p), what) for p in given if p]


def same_file(a: Path, b: Path) -> bool:
    """The same file: the same resolved path, or (both existing) the same inode (a hard link, another case of
    the name on a case-insensitive disk)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    output: str | Path,
    reads: Iterable[Read],
    *,
    flag: str = "-o",
    table: bool = True,
    sidecars: bool = True,
    also: Iterable[Path] = (),
) -> Path:
    """Refuse (InputError, one line) an output that would overwrite a file the command reads. `table`: the output
    is a table (.jsonl/.csv/.parquet) and not a directory; `sidecars`: the files written beside it (OUTPUT.part,
    OUTPUT.ledger.json...) are checked too; `also`: other files the command writes with it. Returns the path."""
    output = Path(output)
    if table:
        input_format(output, "output")
        if output.is_dir():
            raise InputError(f"the output {output} is a directory; give a file path such as {output / 'labels.jsonl'}")
    writes = [output, *also, *(paths.sidecar(output, s) for s in (SIDECARS if sidecars else ()))]
    reads = list(reads)
    for w in writes:
        for r, name in reads:
            if same_file(w, r):
                which = "" if w == output else f" would write {w}, which"
                raise InputError(f"{flag} {output}{which} is {name} ({r}); choose another {flag} path")
    return output
