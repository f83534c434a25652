"""llmlabel: label, audit and distill text datasets with an ensemble of LLM judges."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["label", "label_file", "load_config", "Config"]


def __getattr__(name: str) -> Any:
    # Lazy: `import llmlabel` (and `llmlabel --help`) must not pay for the openai SDK's import.
    if name in ("label", "label_file"):
        from llmlabel.pipeline import api

        return getattr(api, name)
    if name in ("load_config", "Config"):
        from llmlabel import config

        return getattr(config, name)
    raise AttributeError(name)
