"""A label taxonomy (task.taxonomy): a tree of named nodes, labeled top-down.

A node is identified by its path from the roots (a tuple of names): names are unique among siblings only, so
the same name may sit under two parents (Web of Science files "Depression" under Medical and Psychology).
The tree is read from the YAML (a mapping of node -> children) or from a JSON file of the same shape, where
children are a list of names (and one-key mappings for deeper nodes), a mapping, or nothing (a leaf)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Path_ = tuple[str, ...]


@dataclass
class Taxonomy:
    """Children of each node by its path; the roots are the children of ()."""

    children: dict[Path_, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, tree: Any) -> Taxonomy:
        """The tree from its YAML/JSON form; ValueError (one line, what to fix) when it is not one."""
        tax = cls()
        if not isinstance(tree, dict) or len(tree) < 2:
            raise ValueError("task.taxonomy must be a mapping with at least two top-level nodes")
        tax._add((), tree)
        return tax

    def _add(self, parent: Path_, kids: Any) -> None:
        names: list[str] = []
        if kids is None:
            return
        items: list[tuple[Any, Any]]
        if isinstance(kids, dict):
            items = list(kids.items())
        elif isinstance(kids, list):
            items = []
            for k in kids:
                if isinstance(k, dict):
                    items += list(k.items())
                else:
                    items.append((k, None))
        else:
            where = "/".join(parent) or "the top level"
            raise ValueError(f"task.taxonomy: the children of {where} must be a list or a mapping, not {kids!r}")
        for name, sub in items:
            if not isinstance(name, str | int) or isinstance(name, bool) or not str(name).strip():
                raise ValueError(f"task.taxonomy: node {name!r} under {'/'.join(parent) or 'the top'} is not a name")
            name = str(name)
            if name in names:
                raise ValueError(f"task.taxonomy: {name!r} appears twice under {'/'.join(parent) or 'the top'}")
            names.append(name)
            self._add(parent + (name,), sub)
        if names:
            self.children[parent] = names

    @classmethod
    def load(cls, spec: Any, base: Path | None = None) -> Taxonomy:
        """From the tree itself or a path to a JSON file (relative to `base`, the config's folder)."""
        if isinstance(spec, str):
            p = Path(spec)
            if base is not None and not p.is_absolute():
                p = base / p
            try:
                spec = json.loads(p.read_text(encoding="utf-8"))
            except OSError as e:
                raise ValueError(f"task.taxonomy: cannot read {p}: {e.strerror or e}; fix the path") from None
            except ValueError as e:
                raise ValueError(f"task.taxonomy: {p} is not valid JSON ({e}); fix the file") from None
        return cls.parse(spec)

    @property
    def roots(self) -> list[str]:
        return self.children[()]

    def kids(self, path: Path_) -> list[str]:
        return self.children.get(path, [])

    def names(self) -> list[str]:
        """Every node's name once, in the tree's order (breadth first)."""
        out: dict[str, None] = {}
        for parent in sorted(self.children, key=len):
            out.update(dict.fromkeys(self.children[parent]))
        return list(out)

    def as_tree(self, path: Path_ = ()) -> dict[str, Any]:
        """The canonical nested mapping (leaves: None), what the config keeps."""
        return {k: (self.as_tree(path + (k,)) if path + (k,) in self.children else None) for k in self.kids(path)}

    @property
    def depth(self) -> int:
        return 1 + max(len(p) for p in self.children)

    def paths(self) -> list[Path_]:
        """Every node's path, depth first in the tree's order (a parent before its children)."""
        out: list[Path_] = []

        def walk(p: Path_) -> None:
            for k in self.kids(p):
                out.append(p + (k,))
                walk(p + (k,))

        walk(())
        return out

    def resolve(self, text: str) -> Path_ | None:
        """A path a person wrote, as the tree's node (names matched ignoring case), or None when it names none:
        a JSON list (["travel", "flights"]), names joined by " > " or "/", or one node's name when no other node
        has it."""
        text = text.strip()
        tries: list[list[str]] = []
        if text.startswith("["):
            try:
                got = json.loads(text)
            except ValueError:
                got = None
            if isinstance(got, list) and all(isinstance(x, str) for x in got):
                tries.append(got)
        tries += [text.split(PATH_SEP.strip()), text.split("/"), [text]]
        for names in tries:
            found = self.node([n.strip() for n in names])
            if found is not None:
                return found
        if text:  # one node's name, anywhere in the tree, when it is the only node so named
            hits = [p for p in self.paths() if p[-1].casefold() == text.casefold()]
            if len(hits) == 1:
                return hits[0]
        return None

    def node(self, names: list[str]) -> Path_ | None:
        """The node these names lead to from the top (matched ignoring case), or None."""
        path: Path_ = ()
        for n in names:
            fold = {k.casefold(): k for k in self.kids(path)}
            k = fold.get(n.casefold())
            if k is None:
                return None
            path += (k,)
        return path or None


PATH_SEP = " > "  # a path written as one string ("travel > flights"), as the prompts show it


def path_key(path: Any) -> str:
    """A path as one string: its names joined by " > " (what a review sheet and the Label Studio gold show)."""
    return PATH_SEP.join(str(x) for x in path)
