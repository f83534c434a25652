"""A judge's answer: parsed from the model's output and checked against the task's label set."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel

from llmlabel.llm.prompts import NONE_OF_THESE, shortlist_choices, taxonomy_parent


class JudgeAnswer(BaseModel):
    label: str | None = None
    candidates: list[str] | None = None
    labels: list[str] | None = None  # a multi-label judge's set (may be empty; `label` is then None)
    probs: dict[str, float] | None = None  # from logprobs, when the endpoint gives them
    given_label_correct: bool | None = None
    error: str | None = None
    levels: list[JudgeAnswer] | None = None  # a taxonomy row: the judge's answer at each level asked

    def out(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class InvalidAnswer(Exception):
    """The output cannot be used. `transient`: broken or cut-off output, worth asking again."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason, self.transient = reason, transient


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)
_LABEL_START = re.compile(r'"label"\s*:\s*"\s*[^"\s]')


def _match_label(value: Any, labels: list[str]) -> str | None:
    if not isinstance(value, str):
        return None
    if value in labels:
        return value
    v = value.strip().strip("\"'.").casefold()
    for lab in labels:
        if lab.casefold() == v:
            return lab
    return None


def _decode_json(content: str) -> Any:
    text = _FENCE.sub("", content.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # Small models wrap JSON in prose; take the first object.
        start, end = text.find("{"), text.rfind("}")
        if start >= 0 and end > start:
            return json.loads(text[start : end + 1])
        raise


def parse_answer(
    content: str | None, finish_reason: str | None, kind: str, labels: list[str], codes: dict[str, str] | None = None
) -> JudgeAnswer:
    if finish_reason == "invalid_response":
        raise InvalidAnswer("the server's reply was not a valid chat completion", transient=True)
    # A code answer is one token asked with max_tokens 1: servers that stop there report "length" (llama.cpp),
    # so only an answer in another format is cut off.
    if finish_reason == "length" and not codes:
        raise InvalidAnswer("the answer was cut off (max_tokens reached)", transient=True)
    if not content or not content.strip():
        raise InvalidAnswer("the answer was empty", transient=True)
    if kind == "multilabel":
        return _parse_set(content, labels)
    choices = shortlist_choices(kind)
    if choices is not None:
        # A taxonomy level accepts only the node's children (a name elsewhere in the tree is another node).
        return _parse_pick(content, choices if taxonomy_parent(kind) is not None else labels, codes)
    if codes:  # logprob mode: the answer is a single code, or the label itself
        inv = {c.casefold(): lab for lab, c in codes.items()}
        tok = content.strip().strip("\"'.").casefold()
        lab = inv.get(tok) or _match_label(content, labels)
        if lab is None:
            raise InvalidAnswer(
                f"{content.strip()[:40]!r} is not one of the codes {', '.join(codes.values())}", transient=False
            )
        return JudgeAnswer(label=lab)
    try:
        obj = _decode_json(content)
    except json.JSONDecodeError:
        lab = _match_label(content, labels)  # plain-text servers answer with the bare label
        if lab is not None:
            return JudgeAnswer(label=lab, candidates=[lab] if kind == "candidates" else None)
        raise InvalidAnswer("the answer is not valid JSON", transient=True) from None
    if isinstance(obj, str):
        obj = {"label": obj}
    if not isinstance(obj, dict):
        raise InvalidAnswer("the answer is not a JSON object", transient=False)
    raw_label = obj.get("label")
    label = _match_label(raw_label, labels)
    if raw_label is not None and label is None:
        raise InvalidAnswer(f"label {str(raw_label)[:60]!r} is not one of: {', '.join(labels)}", transient=False)
    cands = None
    if kind == "candidates":
        raw = obj.get("candidates")
        if raw is None and label is not None:
            raw = [label]
        if not isinstance(raw, list) or not raw:
            raise InvalidAnswer("'candidates' must be a non-empty list of labels", transient=False)
        cands = []
        for c in raw:
            m = _match_label(c, labels)
            if m is None:
                raise InvalidAnswer(f"candidate {str(c)[:60]!r} is not one of: {', '.join(labels)}", transient=False)
            if m not in cands:
                cands.append(m)
        if label is None or label not in cands:
            label = label if label is not None and label in cands else cands[0]
    if label is None:
        raise InvalidAnswer("the answer has no 'label'", transient=False)
    verdict = obj.get("given_label_correct") if kind == "verify" else None
    return JudgeAnswer(
        label=label, candidates=cands, given_label_correct=verdict if isinstance(verdict, bool) else None
    )


# A shortlist answer that none of its labels fits: the row goes on to its next shortlist.
NO_FIT = "none of the shortlisted labels fits"


def _parse_pick(content: str, labels: list[str], codes: dict[str, str] | None) -> JudgeAnswer:
    """A shortlist answer: a code (logprob judges), or a label name in JSON or plain text. Any of `labels`
    counts (a shortlist's: the task's, listed or not); "none of these" is an answer too (NO_FIT)."""
    offered = [*labels, NONE_OF_THESE]
    raw: Any = content
    if codes:
        inv = {c.casefold(): lab for lab, c in codes.items()}
        lab = inv.get(content.strip().strip("\"'.").casefold()) or _match_label(content, offered)
    else:
        try:
            obj = _decode_json(content)
            raw = obj.get("label") if isinstance(obj, dict) else obj
        except json.JSONDecodeError:
            pass
        lab = _match_label(raw, offered)
    if lab is None:
        raise InvalidAnswer(f"{str(raw).strip()[:60]!r} is not one of the listed labels", transient=False)
    if lab == NONE_OF_THESE:
        return JudgeAnswer(error=NO_FIT)
    return JudgeAnswer(label=lab)


def _parse_set(content: str, labels: list[str]) -> JudgeAnswer:
    """A multi-label answer: {"labels": [...]} (or a bare list, or one label). An empty set is a valid answer
    here; whether the row may keep it is the aggregation's call (task.allow_empty)."""
    try:
        obj = _decode_json(content) if content.strip()[:1] in "{[`" else content
    except json.JSONDecodeError:
        raise InvalidAnswer("the answer is not valid JSON", transient=True) from None
    if isinstance(obj, dict):
        raw = obj.get("labels", obj.get("label"))
    else:
        raw = obj
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise InvalidAnswer("'labels' must be a list of labels", transient=False)
    chosen: list[str] = []
    for x in raw:
        m = _match_label(x, labels)
        if m is None:
            raise InvalidAnswer(f"label {str(x)[:60]!r} is not one of: {', '.join(labels)}", transient=False)
        if m not in chosen:
            chosen.append(m)
    return JudgeAnswer(label=chosen[0] if chosen else None, labels=chosen)


def probs_from_logprobs(
    top: list[list[Any]] | None, labels: list[str], codes: dict[str, str] | None
) -> dict[str, float] | None:
    """A label distribution from the first answer token's top_logprobs (None: no token names a label).

    A token counts for a label when, stripped of quotes, spaces and JSON punctuation and case-folded, it is
    the label's code (when the prompt asked for codes), else its name, else a prefix of exactly one name.
    Codes come first: the prompt asked for them, so with labels `yes, no, A` the token "A" is the code of
    "yes", not the label "A". Probabilities exp(logprob) are summed per label (" A" and "A" both count) and
    renormalized over the labels."""
    if not top:
        return None
    lookup = {lab.casefold(): lab for lab in labels}
    if codes:
        lookup.update({codes[lab].casefold(): lab for lab in labels})
    mass: dict[str, float] = {}
    for tok, lp in top:
        key = str(tok).strip().strip("\"'.{:").casefold()
        if not key or isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp):
            continue  # the server's value is not a logprob
        lp = min(lp, 0.0)  # a probability above 1 is the server's rounding (or garbage): at most certain
        lab = lookup.get(key)
        if lab is None:
            hits = [name for name in labels if name.casefold().startswith(key)]
            lab = hits[0] if len(hits) == 1 else None
        if lab is not None:
            mass[lab] = mass.get(lab, 0.0) + math.exp(lp)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {lab: mass.get(lab, 0.0) / total for lab in labels}


MAX_TOKENS = 10_000_000  # no request or answer comes near this many tokens: a larger count is garbage


def _tokens(v: Any, bound: int | None) -> tuple[int, bool]:
    """One token count from a server's `usage`, and whether it was unusable. The server is not trusted: a
    count that is not a number, or is negative, counts as the request's worst case (`bound`, the most it can
    be: see JudgeClient._worst), so that the budget still trips; a larger one is cut to it. Absent: 0 (many
    local servers report no usage)."""
    cap = MAX_TOKENS if bound is None else bound
    if v is None:
        return 0, False
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return (bound or 0), True
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
        return (bound or 0), True
    if v > cap:
        return cap, True
    return int(v), False


def read_usage(usage: Any, bounds: tuple[int | None, int | None] | None = None) -> tuple[int, int, int]:
    """Prompt and completion tokens of a server's `usage`, and how many of the two were unusable (clamped:
    see `_tokens`). `bounds`: the most prompt and completion tokens the request can have used."""
    if usage is None:
        return 0, 0, 0
    pb, cb = bounds if bounds is not None else (None, None)
    if not isinstance(usage, dict):  # a list, a number, a string: nothing in it can be trusted
        return pb or 0, cb or 0, 2
    pt, odd_p = _tokens(usage.get("prompt_tokens"), pb)
    ct, odd_c = _tokens(usage.get("completion_tokens"), cb)
    return pt, ct, odd_p + odd_c


def read_completion(
    body: bytes, code_mode: bool, bounds: tuple[int | None, int | None] | None = None
) -> dict[str, Any]:
    """A chat completion's body as the payload that is cached and parsed: content, finish_reason, usage and
    the top_logprobs of the token that carries the label (the first token of a code answer; in a JSON answer
    the token where the label's value starts). A body that is not a chat completion gives finish_reason
    "invalid_response" (asked again). `bounds`: see `read_usage`."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {"content": None, "finish_reason": "invalid_response", "usage": {}, "top_logprobs": None}
    pt, ct, odd = read_usage(data.get("usage") if isinstance(data, dict) else None, bounds)
    top = None
    try:  # the server's logprobs, of whatever shape it sent: none when they are not the documented one
        content_lp = (choice.get("logprobs") or {}).get("content")
        if content_lp:
            at = 0 if code_mode else _label_token(content_lp)
            if at is not None:
                top = [[t.get("token"), t.get("logprob")] for t in (content_lp[at].get("top_logprobs") or [])]
    except (KeyError, IndexError, TypeError, AttributeError):
        top = None
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)  # not an answer (it fails to parse and is asked again), but text
    return {
        "content": content,
        "finish_reason": choice.get("finish_reason"),
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, **({"unusable": odd} if odd else {})},
        "top_logprobs": top,
    }


def _label_token(content_lp: list[dict[str, Any]]) -> int | None:
    """Index of the token where a JSON answer's label value starts: its top_logprobs are the label distribution."""
    acc = ""
    for k, t in enumerate(content_lp):
        acc += str(t.get("token") or "")
        if _LABEL_START.search(acc):
            return k
    return None
