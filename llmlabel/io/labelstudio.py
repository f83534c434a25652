"""Label Studio's formats: a labeling config's single-choice control (which one llmlabel can fill, and how its
choices map to the task's labels), the review project's labeling config, and the annotations of its tasks
(an export file, an API answer or a webhook's payload) as answers.

Used by the ML backend (service), the audit's export (auditing) and the review loop's transport (review)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from llmlabel.errors import InputError
from llmlabel.taxonomy import Taxonomy, path_key

# Object tags whose `value="$key"` is a text llmlabel can read (Label Studio's text-like objects).
TEXT_TAGS = frozenset({"Text", "HyperText", "Paragraphs"})
# Where llmlabel keeps a row's id in a task's data (the audit's export and the review loop write it).
ROW_ID_KEY = "row_id"


@dataclass(frozen=True)
class LSControl:
    """The <Choices> control llmlabel fills: its name (from_name), the object it labels (to_name), the task
    data key of that object's text, and its choices (the value each result carries: `alias` when set)."""

    from_name: str = "label"
    to_name: str = "text"
    text_key: str | None = None
    choices: tuple[str, ...] = ()
    multiple: bool = False  # choice="multiple": a multi-label task's set
    # A <Taxonomy> control: every node's path (choice values, a parent before its children); () for <Choices>.
    taxonomy: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class LSAnswer:
    """One submitted annotation's choice for a task."""

    task_id: int | None
    row_id: str  # data.row_id when the task carries one (llmlabel wrote it), else the task's id
    label: str  # a choice; a set joined by "|"; a taxonomy path joined by " > " (taxonomy.path_key)
    annotator: str | None
    annotation_id: int | None
    updated: str  # ISO time (for "the latest per task"); "" when unknown
    text: str | None = None


def _choice_values(el: ET.Element) -> tuple[str, ...]:
    return tuple(c.get("alias") or c.get("value") or "" for c in el.iter("Choice"))


def _fold_map(choices: Iterable[str], labels: Sequence[str], mapping: Mapping[str, str]) -> dict[str, str | None]:
    """Each choice's label: the configured mapping first, then the same name ignoring case (None: no label)."""
    by_fold = {lab.casefold(): lab for lab in labels}
    given = {k.casefold(): v for k, v in mapping.items()}
    out: dict[str, str | None] = {}
    for c in choices:
        target = given.get(c.casefold(), c)
        out[c] = target if target in labels else by_fold.get(target.casefold())
    return out


def map_choices(
    choices: Sequence[str], labels: Sequence[str], mapping: Mapping[str, str] | None = None, where: str = "project"
) -> dict[str, str]:
    """choice -> task label, for every choice of a control, or InputError saying what to change. Two choices
    may not share a label (a prediction could not say which to pick); labels no choice names are not asked."""
    got = _fold_map(choices, labels, mapping or {})
    missing = [c for c, lab in got.items() if lab is None]
    if missing:
        raise InputError(
            f"the {where}'s choices {', '.join(map(repr, missing))} are not labels of the task "
            f"({', '.join(labels)}): rename them in the labeling config, add them to task.labels, or map them "
            f"(llmlabel serve --ls-label {missing[0]}=LABEL)"
        )
    seen: dict[str, str] = {}
    for c, lab in got.items():
        assert lab is not None
        if lab in seen:
            raise InputError(f"the {where}'s choices {seen[lab]!r} and {c!r} both map to the label {lab!r}; keep one")
        seen[lab] = c
    if len(seen) < 2:
        raise InputError(f"the {where}'s <Choices> has {len(seen)} choice(s); llmlabel needs at least two")
    return {c: lab for c, lab in got.items() if lab is not None}


def parse_config(
    xml: str | None,
    labels: Sequence[str] | None = None,
    mapping: Mapping[str, str] | None = None,
    multi_label: bool | None = None,
    taxonomy: bool | None = None,
) -> LSControl:
    """The control llmlabel fills in a labeling config, or InputError with what to change. No config: the
    defaults (label / text). With several <Choices>, the one whose choices all map to `labels` (when given);
    none or several such: refused. Span (<Labels>) and non-text controls are refused; choice="multiple" needs a
    multi-label task and a multi-label task needs it (`multi_label` None: either is read as it is). A taxonomy
    task (`taxonomy` True) is served through one <Taxonomy> control, a flat task never (None: the config's
    <Choices> if it has one, else its <Taxonomy>)."""
    if not xml or not xml.strip():
        return LSControl(multiple=bool(multi_label))
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputError(f"label_config is not valid XML ({e}); send the project's labeling config") from None
    controls = [el for el in root.iter("Choices")]
    trees = [el for el in root.iter("Taxonomy")]
    if taxonomy or (taxonomy is None and trees and not controls):
        return _taxonomy_control(root, trees)
    if taxonomy is False and trees and not controls:
        raise InputError(
            f"the labeling config has a <Taxonomy name={trees[0].get('name')!r}> control and the task has no "
            'task.taxonomy: use <Choices name=... toName=... choice="single"> (or give the task its taxonomy)'
        )
    if not controls:
        spans = [el.tag for el in root.iter() if el.tag in ("Labels", "HyperTextLabels", "ParagraphLabels")]
        what = (
            f"a <{spans[0]}> (span/NER) control" if spans else "no <Choices> control"
        ) + ': llmlabel classifies whole texts into one choice; use <Choices name=... toName=... choice="single">'
        raise InputError(f"the labeling config has {what}")
    if len(controls) > 1 and labels is not None:
        fits = [
            el
            for el in controls
            if all(v is not None for v in _fold_map(_choice_values(el), labels, mapping or {}).values())
        ]
        if len(fits) != 1:
            names = ", ".join(repr(el.get("name")) for el in controls)
            raise InputError(
                f"the labeling config has {len(controls)} <Choices> ({names}) and "
                + ("none" if not fits else f"{len(fits)}")
                + f" whose choices are the task's labels ({', '.join(labels)}); llmlabel fills exactly one: "
                "make one control's choices the labels (or map them with --ls-label)"
            )
        controls = fits
    elif len(controls) > 1:
        names = ", ".join(repr(el.get("name")) for el in controls)
        raise InputError(f"the labeling config has {len(controls)} <Choices> ({names}); pass the one to fill")
    el = controls[0]
    multiple = (el.get("choice") or "single").lower() == "multiple"
    if (el.get("choice") or "single").lower() not in ("single", "single-radio", "multiple"):
        raise InputError(
            f'<Choices name={el.get("name")!r}> has choice={el.get("choice")!r}: use "single" or "multiple"'
        )
    if multi_label is not None and multiple != multi_label:
        raise InputError(
            f'<Choices name={el.get("name")!r}> has choice="multiple": the task predicts one label per text; use '
            'choice="single" (or task.multi_label: true)'
            if multiple
            else f"<Choices name={el.get('name')!r}> takes one choice, and the task is multi-label (a set per text): "
            'use choice="multiple"'
        )
    from_name, to_name, key = _target(root, el)
    return LSControl(from_name, to_name, key, _choice_values(el), multiple)


def _target(root: ET.Element, el: ET.Element) -> tuple[str, str, str]:
    """A control's name, the object it labels, and that object's task data key (InputError: not a text)."""
    from_name, to_name = el.get("name") or "label", el.get("toName") or "text"
    obj = next((x for x in root.iter() if x.get("name") == to_name and x is not el), None)
    if obj is None:
        raise InputError(f"<{el.tag} name={from_name!r}> labels toName={to_name!r}, which no tag of the config names")
    value = obj.get("value") or ""
    if obj.tag not in TEXT_TAGS or not value.startswith("$"):
        raise InputError(
            f"<{el.tag} name={from_name!r}> labels <{obj.tag} name={to_name!r} value={value!r}>: llmlabel reads "
            'text only, e.g. <Text name="text" value="$text"/>'
        )
    return from_name, to_name, value[1:]


def _taxonomy_control(root: ET.Element, trees: list[ET.Element]) -> LSControl:
    """The one <Taxonomy> control of a taxonomy task's config, with its tree's node paths."""
    if len(trees) != 1:
        what = "no <Taxonomy> control" if not trees else f"{len(trees)} <Taxonomy> controls"
        raise InputError(
            f"the labeling config has {what}; a taxonomy task (task.taxonomy) fills exactly one "
            "<Taxonomy name=... toName=...> whose nested <Choice> tags are the tree"
        )
    el = trees[0]
    if el.get("apiUrl"):
        raise InputError(
            f"<Taxonomy name={el.get('name')!r}> reads its tree from apiUrl; llmlabel checks the tree against "
            "task.taxonomy: write it as nested <Choice> tags"
        )
    paths: list[tuple[str, ...]] = []

    def walk(node: ET.Element, at: tuple[str, ...]) -> None:
        for c in node:
            if c.tag == "Choice":
                p = at + (c.get("alias") or c.get("value") or "",)
                paths.append(p)
                walk(c, p)

    walk(el, ())
    from_name, to_name, key = _target(root, el)
    return LSControl(from_name, to_name, key, taxonomy=tuple(paths))


def map_taxonomy(
    nodes: Sequence[tuple[str, ...]], tax: Taxonomy, where: str = "project"
) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Each node path of a <Taxonomy> control -> the task.taxonomy node it is (names matched ignoring case), or
    InputError naming the first difference: the two trees must be the same (a prediction must be a node the
    project has, and an annotation a node the task has)."""
    out: dict[tuple[str, ...], tuple[str, ...]] = {}
    for p in nodes:
        got = tax.node(list(p))
        if got is None or len(got) != len(p):
            raise InputError(
                f"the {where}'s <Taxonomy> has the node {' > '.join(p)!r}, which task.taxonomy has not: make the "
                "two trees the same (the labeling config's nested <Choice> tags, or task.taxonomy)"
            )
        if got in out.values():
            raise InputError(f"the {where}'s <Taxonomy> has the node {' > '.join(got)!r} twice; keep one")
        out[p] = got
    missing = [p for p in tax.paths() if p not in set(out.values())]
    if missing:
        raise InputError(
            f"task.taxonomy has the node {' > '.join(missing[0])!r}, which the {where}'s <Taxonomy> has not: add "
            "it as a nested <Choice> (the two trees must be the same)"
        )
    return out


def taxonomy_config(
    tax: Taxonomy, text_key: str = "text", from_name: str = "taxonomy", to_name: str = "text", review: bool = False
) -> str:
    """A labeling config whose <Taxonomy> is the task's tree (to paste into a project; `review`: with the review
    project's suggestion and why the row was picked above it)."""

    def choices(p: tuple[str, ...], indent: str) -> str:
        lines = []
        for k in tax.kids(p):
            kids = choices(p + (k,), indent + "  ")
            if kids:
                lines.append(f"{indent}<Choice value={quoteattr(k)}>\n{kids}\n{indent}</Choice>")
            else:
                lines.append(f"{indent}<Choice value={quoteattr(k)}/>")
        return "\n".join(lines)

    return f"""<View>
  <Text name={quoteattr(to_name)} value={quoteattr("$" + text_key)}/>{chr(10) + REVIEW_HEADERS if review else ""}
  <Taxonomy name={quoteattr(from_name)} toName={quoteattr(to_name)} showFullPath="true" pathSeparator=" > ">
{choices((), "    ")}
  </Taxonomy>
</View>"""


def taxonomy_result(path: Sequence[str], from_name: str, to_name: str, score: float | None = None) -> dict[str, Any]:
    """One `taxonomy` result of a prediction or annotation: the path, top first, as Label Studio stores it."""
    out: dict[str, Any] = {
        "from_name": from_name,
        "to_name": to_name,
        "type": "taxonomy",
        "value": {"taxonomy": [list(path)]},
    }
    if score is not None:
        out["score"] = score
    return out


REVIEW_HEADERS = """  <View style="display: flex; gap: 2em; margin: 0.5em 0">
    <Header size="6" value="Given label: $given_label"/>
    <Header size="6" value="Model suggests: $suggested_label ($confidence)"/>
  </View>
  <Header size="6" value="Why this row: $why"/>"""


def review_config(
    labels: Sequence[str],
    text_key: str = "text",
    from_name: str = "label",
    to_name: str = "text",
    multiple: bool = False,
) -> str:
    """The review project's labeling config: the text, then the given label (an audit's), the model's
    suggestion with its confidence and why the row was picked, side by side; one choice per label (the
    model's pre-selected by its prediction; several for a multi-label task's set)."""
    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    how = "multiple" if multiple else "single"
    return f"""<View>
  <Text name={quoteattr(to_name)} value={quoteattr("$" + text_key)}/>
{REVIEW_HEADERS}
  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice="{how}" showInline="true">
{choices}
  </Choices>
</View>"""


def choice_result(value: str | list[str], from_name: str, to_name: str, score: float | None = None) -> dict[str, Any]:
    """One `choices` result of a prediction or annotation (a list: a multi-choice control's set)."""
    out: dict[str, Any] = {
        "from_name": from_name,
        "to_name": to_name,
        "type": "choices",
        "value": {"choices": value if isinstance(value, list) else [value]},
    }
    if score is not None:
        out["score"] = score
    return out


def _annotator(a: Mapping[str, Any]) -> str | None:
    by = a.get("completed_by")
    if isinstance(by, Mapping):
        return str(by.get("email") or by.get("username") or by.get("id"))
    if a.get("created_username"):  # "email, id" in API answers
        return str(a["created_username"]).split(",")[0].strip() or None
    return None if by is None else str(by)


def annotation_label(a: Mapping[str, Any], from_name: str | None) -> str | None:
    """The choice an annotation made in the control `from_name` (any choices or taxonomy control when None); a
    set of several (a multi-choice control) joined by "|", as a multi-label output's `label` is (in the order
    Label Studio stored them; the reader of the set orders it); one taxonomy path joined by " > " (several paths
    chosen in one control: not one answer, left out)."""
    if a.get("was_cancelled"):
        return None
    found = []
    for r in a.get("result") or []:
        if not isinstance(r, Mapping) or r.get("type") not in ("choices", "taxonomy"):
            continue
        if from_name is not None and r.get("from_name") != from_name:
            continue
        value = r.get("value")
        if r.get("type") == "taxonomy":
            paths = value.get("taxonomy") if isinstance(value, Mapping) else None
            if isinstance(paths, list) and len(paths) == 1 and isinstance(paths[0], list) and paths[0]:
                if all(isinstance(x, str) for x in paths[0]):
                    found.append(path_key(paths[0]))
            continue
        got = value.get("choices") if isinstance(value, Mapping) else None
        if not isinstance(got, list):
            continue
        if got and all(isinstance(x, str) for x in got):
            found.append("|".join(got))
    return found[0] if len(set(found)) == 1 else None


def task_answers(task: Mapping[str, Any], from_name: str | None, text_key: str | None = None) -> list[LSAnswer]:
    """Every usable annotation of one task (exported or from the API) as answers (skipped or empty ones left
    out)."""
    data = task.get("data")
    data = data if isinstance(data, Mapping) else {}
    tid = task.get("id")
    tid = tid if isinstance(tid, int) and not isinstance(tid, bool) else None
    rid = data.get(ROW_ID_KEY)
    row_id = str(rid) if rid is not None else str(tid)
    text = data.get(text_key) if text_key else None
    out = []
    anns = task.get("annotations")
    for a in anns if isinstance(anns, list) else []:
        if not isinstance(a, Mapping):
            continue
        label = annotation_label(a, from_name)
        if label is None:
            continue
        out.append(
            LSAnswer(
                task_id=tid,
                row_id=row_id,
                label=label,
                annotator=_annotator(a),
                annotation_id=a.get("id") if isinstance(a.get("id"), int) else None,
                updated=str(a.get("updated_at") or a.get("created_at") or ""),
                text=text if isinstance(text, str) else None,
            )
        )
    return out


def latest_per_row(answers: Iterable[LSAnswer]) -> list[LSAnswer]:
    """The most recently updated answer of each row (ties: the higher annotation id), in first-seen order."""
    best: dict[str, LSAnswer] = {}
    for a in answers:
        cur = best.get(a.row_id)
        if cur is None or (a.updated, a.annotation_id or 0) >= (cur.updated, cur.annotation_id or 0):
            best[a.row_id] = a
    return list(best.values())
