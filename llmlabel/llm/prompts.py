"""Rendering a row into chat messages and the response schema a judge must follow."""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from importlib import resources
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmlabel.config import Config, Example, Judge, Task
from llmlabel.errors import ConfigError
from llmlabel.io.values import text_form
from llmlabel.llm.memo import Memo

PromptKind = str  # "label" | "candidates" | "verify" | "multilabel" | a shortlist kind | a custom template name

# A shortlist question (task.shortlist) asks for one label among a few: its kind carries them, so that the
# request (schema, codes) and its cache key follow from the kind alone, as for every other prompt kind.
NONE_OF_THESE = "none of these"
_SHORTLIST = "shortlist"
_SEP = "\x1f"


def shortlist_kind(choices: list[str]) -> str:
    return _SEP.join([_SHORTLIST, *choices])


# A taxonomy level (task.taxonomy) asks for one child of the node reached so far: its kind carries that node's
# path and its children, so that the request, its schema and its cache key follow from the kind alone too.
_TAXONOMY = "taxonomy"
_PATHSEP = "\x1e"


def taxonomy_kind(parent: tuple[str, ...] | list[str], choices: list[str]) -> str:
    return _SEP.join([_PATHSEP.join([_TAXONOMY, *parent]), *choices])


def taxonomy_parent(kind: str) -> tuple[str, ...] | None:
    """The path of the node a taxonomy kind asks about (() for the top level); None for other kinds."""
    head = kind.split(_SEP, 1)[0]
    return tuple(head.split(_PATHSEP)[1:]) if head.split(_PATHSEP, 1)[0] == _TAXONOMY and _SEP in kind else None


def first_kind(task: Task, kind: str) -> str:
    """The kind a run of `kind` asks first, with no row's answers yet: a taxonomy's top level for "taxonomy"."""
    if kind == _TAXONOMY and task.taxonomy is not None:
        return taxonomy_kind((), list(task.taxonomy))
    return kind


def shortlist_choices(kind: str) -> list[str] | None:
    """The labels a per-row kind offers (a shortlist's, without "none of these"; a taxonomy level's children);
    None for other kinds."""
    if kind.startswith(_SHORTLIST + _SEP) or taxonomy_parent(kind) is not None:
        return kind.split(_SEP)[1:]
    return None


def offered(kind: str) -> list[str] | None:
    """The answers a per-row kind accepts: its labels, and "none of these" for a shortlist."""
    choices = shortlist_choices(kind)
    if choices is None or taxonomy_parent(kind) is not None:
        return choices
    return [*choices, NONE_OF_THESE]


# A per-label question (judge.per_label): does this one label fit the text? Its kind carries the label; it is
# answered Yes or No in one token (FITS_CODES), whatever the judge's response format.
_FITS = "fits"
YES, NO = "Yes", "No"
FITS_CODES = {YES: YES, NO: NO}  # shared: never modified


def fits_kind(label: str) -> str:
    return _SEP.join([_FITS, label])


def fits_label(kind: str) -> str | None:
    """The label a per-label kind asks about; None for other kinds."""
    head, sep, label = kind.partition(_SEP)
    return label if sep and head == _FITS else None


@functools.lru_cache(maxsize=4096)  # once a request (Prompts.messages): ~60 bytecodes of parsing the kind
def prompt_name(kind: str) -> str:
    """The template a kind is rendered with."""
    if taxonomy_parent(kind) is not None:
        return _TAXONOMY
    if fits_label(kind) is not None:
        return _FITS
    return _SHORTLIST if shortlist_choices(kind) is not None else kind


# What a text's own <text> or </text> tag becomes: look-alike brackets, so it cannot close the block early.
_SAFE_OPEN, _SAFE_CLOSE = "\u2039", "\u203a"
# Characters that read as "<" once normalized (NFKC: the fullwidth and small forms): a tag starts at one of them.
_LT = ("<", "\ufe64", "\uff1c")
# Where a tag may start: a "<" not followed by what ends the question at once (an HTML tag such as <b> or </p>,
# a number); `_tag_at` reads the rest.
_CANDIDATE = re.compile(r"[<\ufe64\uff1c](?!/?[a-su-zA-SU-Z0-9!>])")
_CANDIDATE_ASCII = re.compile(r"<(?!/?[a-su-zA-SU-Z0-9!>])")  # the same, faster: a literal first character
# Look-alikes NFKC leaves alone: Cyrillic and Greek letters drawn like t, e, x, and slashes drawn like "/".
_CONFUSABLE = str.maketrans(
    {
        "\u0435": "e",
        "\u0445": "x",
        "\u0442": "t",
        "\u03c4": "t",
        "\u03c7": "x",
        "\u03b5": "e",
        "\u2044": "/",
        "\u2215": "/",
        "\u29f8": "/",
    }
)


def _norm(c: str) -> str:
    """One character as the tag matcher reads it: "" for what a reader does not see (zero-width and other
    format characters, combining marks, controls), " " for any space, else its NFKC, case-folded form."""
    if c.isascii():
        if c.isspace():
            return " "
        return c.lower() if c >= " " and c != "\x7f" else ""
    if c.isspace():
        return " "
    if unicodedata.category(c) in ("Cf", "Cc", "Mn", "Me", "Cs", "Co", "Cn"):
        return ""
    return unicodedata.normalize("NFKC", c).casefold().translate(_CONFUSABLE)


def _tag_at(text: str, i: int) -> tuple[int, bool, bool] | None:
    """Whether a text/TEXT tag, in any disguise, starts at text[i] (a "<"): (its end, closing, has ">")."""
    want, closing, seen, j, n = "text", False, "", i + 1, len(text)
    while j < n:  # "<", spaces, an optional "/", spaces, then t e x t with nothing visible between
        c = _norm(text[j])
        j += 1
        if not c or (c == " " and not seen):
            continue
        for ch in c:  # (a ligature may stand for several letters)
            if ch == "/" and not seen and not closing:
                closing = True
            elif seen + ch == want[: len(seen) + 1]:
                seen += ch
            else:
                return None
        if seen == want:
            break
    else:
        return None
    end, spaced = j, False
    while j < n:  # the word must end there ("<textual>" is no tag); spaces and a ">" may follow
        c = _norm(text[j])
        if not c or c == " ":
            spaced = spaced or c == " "
            j += 1
            continue
        if c == ">":
            return j + 1, closing, True
        return None if not spaced and (c[0].isalnum() or c[0] == "_") else (end, closing, False)
    return end, closing, False


def neutralize(text: str) -> str:
    """Texts cannot open or close the <text> block: their own tags, in any case or spacing, with zero-width
    or combining characters inside, in fullwidth or look-alike letters, are swapped for look-alikes
    (‹text›, ‹/text›)."""
    if "<" not in text and (text.isascii() or ("\uff1c" not in text and "\ufe64" not in text)):
        return text  # nearly every text: one or three scans in C
    out: list[str] = []
    last = 0
    for m in (_CANDIDATE_ASCII if "\uff1c" not in text and "\ufe64" not in text else _CANDIDATE).finditer(text):
        i = m.start()
        if i < last:
            continue  # inside a tag just replaced
        tag = _tag_at(text, i)
        if tag is None:
            continue
        end, closing, gt = tag
        out += [text[last:i], _SAFE_OPEN, "/" if closing else "", "text", _SAFE_CLOSE if gt else ""]
        last = end
    return "".join(out) + text[last:] if out else text


def _env(prompts_dir: str | None) -> ImmutableSandboxedEnvironment:
    builtin = str(resources.files("llmlabel.templates"))
    loaders = [FileSystemLoader(prompts_dir)] if prompts_dir else []
    loaders.append(FileSystemLoader(builtin))
    # Sandboxed and strict: a template (user-supplied) cannot reach Python internals or silently drop a variable.
    return ImmutableSandboxedEnvironment(
        loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )


def row_text(row: dict[str, Any], task: Task, prompts_dir: str | None = None) -> str | None:
    """The text to label of one row (a one-off: many rows go through one `Prompts`, which compiles once)."""
    return Prompts(task, prompts_dir).row_text(row)


def render_messages(
    cfg: Config,
    judge: Judge | None,
    kind: PromptKind,
    text: str,
    given_label: str | None = None,
    logprob_codes: bool = False,
    demos: list[Example] | None = None,
) -> list[dict[str, str]]:
    """The messages for one text (a one-off: many texts go through one `Prompts`, which renders the prompt's
    fixed part once)."""
    return Prompts(cfg.task, cfg.prompts_dir).messages(judge, kind, text, given_label, logprob_codes, demos)


def _clean(text: str) -> str:
    """Lone surrogates (legal in JSON, not in UTF-8) would break hashing and sending: replace them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def label_codes(labels: list[str]) -> dict[str, str]:
    """Short codes for logprob scoring, label -> code: A..Z, then AA, AB, ... (spreadsheet-column order)."""
    codes = {}
    for n, lab in enumerate(labels):
        code, i = "", n + 1
        while i > 0:
            i, r = divmod(i - 1, 26)
            code = chr(ord("A") + r) + code
        codes[lab] = code
    return codes


def response_schema(kind: PromptKind, labels: list[str]) -> dict[str, Any]:
    listed = offered(kind)
    enum = {"type": "string", "enum": labels if listed is None else listed}
    if kind == "candidates":
        # The label comes first: under constrained decoding a small model that writes the list first
        # fills it in the labels' listed order; committing to its best label first keeps label-mode accuracy.
        props = {"label": enum, "candidates": {"type": "array", "items": enum, "minItems": 1}}
    elif kind == "verify":
        props = {"label": enum, "given_label_correct": {"type": "boolean"}}
    elif kind == "multilabel":
        # minItems 0: an empty set is a valid answer (the prompt says when it is allowed; the aggregation enforces it)
        props = {"labels": {"type": "array", "items": enum, "minItems": 0}}
    else:
        props = {"label": enum}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def response_format(fmt: str, kind: PromptKind, labels: list[str], task_name: str) -> dict[str, Any] | None:
    if fmt == "json_schema":
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in f"{task_name}_{prompt_name(kind)}")[:64]
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": response_schema(kind, labels), "strict": True},
        }
    if fmt == "json_object_schema":
        return {"type": "json_object", "schema": response_schema(kind, labels)}
    if fmt == "json_object":
        return {"type": "json_object"}
    return None


def _example_answer(ex: Example, kind: PromptKind, codes: dict[str, str] | None) -> str:
    if kind == "multilabel":
        return json.dumps({"labels": ex.labels if ex.labels is not None else ([ex.label] if ex.label else [])})
    if codes:
        return codes[ex.label or (ex.candidates or [""])[0]]
    if kind == "candidates":
        cands = ex.candidates or [ex.label or ""]
        # The label first, as the response schema and the template ask: a demonstration in the other order
        # teaches a small judge to write the list first (see candidates.j2).
        return json.dumps({"label": ex.label or cands[0], "candidates": cands})
    return json.dumps({"label": ex.label or (ex.candidates or [""])[0]})


def _pairs(examples: list[Example], block: Any, kind: PromptKind, codes: dict[str, str] | None) -> list[dict[str, str]]:
    """Demonstrations as chat turns: the example's text as a user message, its answer as the assistant's."""
    out = []
    for ex in examples:
        out.append({"role": "user", "content": block("user", text=neutralize(ex.text), given_label=ex.label)})
        out.append({"role": "assistant", "content": _example_answer(ex, kind, codes)})
    return out


def _template_line(e: BaseException, tmpl: Any) -> str:
    """' (file, line N)' of the template line that raised `e`: the template's compiled frame, mapped back."""
    import traceback

    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if tmpl.filename and frame.filename == tmpl.filename and frame.lineno:
            return f" ({tmpl.filename}, line {tmpl.get_corresponding_lineno(frame.lineno)})"
    return ""


class Prompts:
    """One task's prompt rendering, and what it compiles, owned by whoever renders many rows (a RowLabeler): the
    template environment, the text_column template, and each prompt's fixed part (system message, examples,
    the user block around the text), rendered once."""

    def __init__(self, task: Task, prompts_dir: str | None) -> None:
        self.task, self.prompts_dir = task, prompts_dir
        self._env: ImmutableSandboxedEnvironment | None = None
        self._text_template: Any = None
        # Bounded: /v1/verify keys prefixes by the given label, which clients choose.
        self.prefixes: Memo[Any, Any] = Memo(256)

    @property
    def env(self) -> ImmutableSandboxedEnvironment:
        if self._env is None:
            self._env = _env(self.prompts_dir)
        return self._env

    def row_text(self, row: dict[str, Any]) -> str | None:
        """The text to label: one column, or a template over several ("{{ title }}\\n{{ body }}")."""
        col = self.task.text_column
        if "{{" in col:
            if self._text_template is None:
                self._text_template = self.env.from_string(col)
            try:
                return _clean(self._text_template.render(**{str(k): ("" if v is None else v) for k, v in row.items()}))
            except TemplateError as e:
                raise ConfigError(
                    f"task.text_column template failed: {e}; fix the template or the column names"
                ) from None
        v = row.get(col)
        if v is None:
            return None
        if isinstance(v, str):
            return _clean(v)
        if isinstance(v, (bytes, bytearray)):  # a Parquet binary column of text
            return _clean(bytes(v).decode("utf-8", "replace"))
        return _clean(text_form(v))  # a JSON list or object: sent as JSON (a number as written)

    def messages(
        self,
        judge: Judge | None,
        kind: PromptKind,
        text: str,
        given_label: str | None = None,
        logprob_codes: bool = False,
        demos: list[Example] | None = None,
    ) -> list[dict[str, str]]:
        """The exact messages sent for one text: system, the task's few-shot pairs, the text's own retrieved
        demonstrations (`demos`, after the shared prefix so that servers can reuse it), then the text."""
        name = judge.prompt if judge and judge.prompt else prompt_name(kind)
        pkey = (name, kind, logprob_codes, given_label)
        # The hot path: prefix and user frame already rendered, nothing to look up (not even the template).
        prefix, frame = self.prefixes.get(pkey), self.prefixes.get(("user",) + pkey)
        if prefix is not None and frame and not demos:
            return prefix + [{"role": "user", "content": (frame[0] + neutralize(text) + frame[1]).strip()}]
        choices = shortlist_choices(kind)
        codes = label_codes(offered(kind) or self.task.label_names) if logprob_codes else None
        block = self._blocks(name, kind, codes)
        if prefix is None:
            prefix = [{"role": "system", "content": block("system", text="", given_label=given_label)}]
            # (a shortlist's demonstrations would need their own lists: they shape it instead; a per-label
            # question has none: config refuses examples with per_label)
            if choices is None and fits_label(kind) is None:
                prefix += _pairs(self.task.examples, block, kind, codes)
            self.prefixes.put(pkey, prefix)
        if demos and choices is None:
            prefix = prefix + _pairs(demos, block, kind, codes)
        text = neutralize(text)
        # The user block usually just places the text: render it once around a marker, then splice each text
        # in. A template that transforms the text (a filter, a loop) does not show the marker verbatim: render
        # in full.
        ukey = ("user",) + pkey
        frame = self.prefixes.get(ukey)
        if frame is None:
            rendered = block("user", text=_MARK, given_label=given_label)
            frame = (
                rendered.split(_MARK)
                if rendered.count(_MARK) == 1
                and block("user", text="", given_label=given_label) == rendered.replace(_MARK, "")
                else []
            )
            self.prefixes.put(ukey, frame)
        if frame:
            content = (frame[0] + text + frame[1]).strip()
        else:
            content = block("user", text=text, given_label=given_label)
        return prefix + [{"role": "user", "content": content}]

    def _blocks(self, name: str, kind: PromptKind, codes: dict[str, str] | None) -> Callable[..., str]:
        """A renderer of the named template's blocks (`block(block_name, **variables)`)."""
        try:
            tmpl = self.env.get_template(name if name.endswith(".j2") else f"{name}.j2")
        except TemplateNotFound:
            where = self.prompts_dir or "the built-in prompts"
            raise ConfigError(f"prompt template '{name}' not found in {where}; add {name}.j2 or fix the name") from None
        except TemplateError as e:
            raise ConfigError(f"prompt template '{name}' is invalid: {e}; fix the template") from None
        base = {"task": self.task, "labels": self.task.labels, "codes": codes, "kind": prompt_name(kind)}
        choices = shortlist_choices(kind)
        if choices is not None:
            base["choices"] = {c: self.task.labels.get(c, "") for c in choices}
            base["none_of_these"] = NONE_OF_THESE
            base["parent"] = list(taxonomy_parent(kind) or ())  # a taxonomy level: the node reached so far
        label = fits_label(kind)
        if label is not None:
            base["label"], base["description"] = label, self.task.labels.get(label, "")

        def block(block_name: str, **extra: Any) -> str:
            if block_name not in tmpl.blocks:
                raise ConfigError(
                    f"prompt template '{name}' has no '{{% block {block_name} %}}'; define blocks system and user"
                )
            ctx = tmpl.new_context({**base, **extra})
            try:
                return "".join(tmpl.blocks[block_name](ctx)).strip()
            except Exception as e:  # noqa: BLE001 - a template's own expressions may raise anything ({{ 1/0 }})
                what = str(e) if isinstance(e, TemplateError) else f"{type(e).__name__}: {e}"
                raise ConfigError(
                    f"prompt template '{name}'{_template_line(e, tmpl)} failed: {what}; fix the template"
                ) from None

        return block


_MARK = "\x00llmlabel-text\x00"
