"""A judge's answer: parsed from the model's output and checked against the task's label set."""

from __future__ import annotations

import functools
import json
import math
import re
import types
from collections.abc import Mapping
from typing import Any

from llmlabel.llm.prompts import NONE_OF_THESE, shortlist_choices, taxonomy_parent
from llmlabel.results import JudgeAnswer


class InvalidAnswer(Exception):
    """The output cannot be used. `transient`: broken or cut-off output, worth asking again."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason, self.transient = reason, transient


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)
_LABEL_START = re.compile(r'"label"\s*:\s*"\s*[^"\s]')
Step = tuple[str | None, float | None, list[list[Any]]]  # a label token: (decoded token, its logprob, top_logprobs)
_PUNCT = " \t\r\n\"'.{:"  # around a first label token: spaces, quotes, JSON punctuation


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


def _logprob(v: Any) -> float | None:
    """A server's logprob, untrusted: None when it is not a finite number; above 0 (a probability over 1: the
    server's rounding, or garbage) it counts as certain."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return min(float(v), 0.0)


@functools.lru_cache(maxsize=64)
def _label_table(
    labels: tuple[str, ...],
) -> tuple[Mapping[str, str], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """What reading a label set's answers needs, built once per label set (read-only, as it is shared): each
    case-folded name -> its label, (folded name, label) in order, and (word, label) for each word of a name of
    several ("Sci/Tech": "sci", "tech"). Rebuilt for every answer, the word split alone made reading an answer
    of CLINC's 151 labels ~5x slower (~600 against ~100 us); building the names once too takes 6-14% off
    reading an answer (151 labels: 171-178 against 185-206 us; 2 labels: 10.1 against 10.7 us)."""
    lookup = types.MappingProxyType({lab.casefold(): lab for lab in labels})
    folded = tuple((lab.casefold(), lab) for lab in labels)
    parts: list[tuple[str, str]] = []
    for lab in labels:
        words = [w for w in re.split(r"[^0-9a-z]+", lab.casefold()) if w]
        if len(words) > 1:
            parts.extend((w, lab) for w in words)
    return lookup, folded, tuple(parts)


def _by_part(key: str, parts: tuple[tuple[str, str], ...]) -> list[str]:
    """The one label a first token names by a word of its name, else none. Under constrained decoding the
    model can only write a label's first word, but its logprobs show what it meant: for a technology story
    and the label "Sci/Tech" (AG News'), the 1.5B's top tokens are "Business" -0.33, "World", "Tech" -2.73,
    "Sci" -3.01, "Science" -3.64, so "Tech" and "Science" count for it too. A word of 3+ letters that starts
    the token counts ("Science" for "sci"), and only where it names one label (intents share words)."""
    hits = {lab for w, lab in parts if w.startswith(key) or (len(w) >= 3 and key.startswith(w))}
    return list(hits) if len(hits) == 1 else []


def probs_from_logprobs(
    top: list[list[Any]] | None,
    labels: list[str],
    codes: dict[str, str] | None,
    decoded: str | None = None,
    path: list[Step] | None = None,
) -> dict[str, float] | None:
    """A label distribution from the label's tokens' top_logprobs (None: no token names a label).

    `top` is the first label token's top_logprobs; `path`, when the payload has it, every token of the decoded
    label value (its first entry is that same token); `decoded` the parsed answer's label.

    A first token counts for a label when, stripped of quotes, spaces and JSON punctuation and case-folded, it
    is the label's code (when the prompt asked for codes), else its name, else a prefix of names. Codes come
    first: the prompt asked for them, so with labels `yes, no, A` the token "A" is the code of "yes", not the
    label "A". Probabilities exp(logprob) are summed per label (" A" and "A" both count) and renormalized.

    Labels that share a first token ("pending_transfer", "pending_card_payment": both start with "pending")
    are told apart the way the model itself tells them apart, at no extra request: the ambiguous token's mass
    follows the decoded path, and at each later token of the decoded label it is split by that token's
    top_logprobs (the next-token distribution given the shared prefix), i.e. each label gets the probability
    of its own token sequence where the answer's logprobs reach it. Mass still ambiguous where the path ends
    (an answer cached before paths were stored has the first token only) goes to the decoded label when it is
    one of the candidates (greedy decoding picked it from there), else is split evenly among them. Dropping
    that mass, as before, threw away 86-99% of the probability on intent sets and took the label from tail
    tokens."""
    if not top:
        return None
    steps: list[Step] = list(path) if path else [(None, None, top)]
    lookup, folded, parts = _label_table(tuple(labels))
    if codes:
        lookup = {**lookup, **{codes[lab].casefold(): lab for lab in labels}}

    def first(tok: str) -> tuple[str, list[str]]:
        key = tok.strip(_PUNCT).casefold()
        if not key:
            return key, []
        lab = lookup.get(key)
        if lab is not None:
            return key, [lab]
        names = [name for f, name in folded if f.startswith(key)]
        return key, names or _by_part(key, parts)

    def later(prefix: str, tok: str) -> tuple[str, list[str]]:
        if '"' in tok:  # the value ends in this token: the label is exactly what came before the quote
            key = prefix + tok[: tok.index('"')].casefold()
            return key, [name for f, name in folded if f == key]
        key = prefix + tok.casefold()
        return key, [name for f, name in folded if f.startswith(key)]

    mass: dict[str, float] = {}

    def add(names: list[str], p: float) -> None:
        for name in names:
            mass[name] = mass.get(name, 0.0) + p / len(names)

    weight, prefix = 1.0, ""
    carry: tuple[list[str], float] | None = None  # mass on the decoded path, still shared by several labels
    for i, (dtok, dlp, alts) in enumerate(steps):
        entries = [(str(t), lp) for t, lp in ((t, _logprob(x)) for t, x in alts or []) if lp is not None]
        dlp = _logprob(dlp)
        if dtok is not None and dlp is not None and all(t != dtok for t, _ in entries):
            entries.append((dtok, dlp))  # the chosen token may be outside the top list (constrained decoding)
        read = first if i == 0 else (lambda t, at=prefix: later(at, t))
        scored = [(*read(t), math.exp(lp)) for t, lp in entries]
        total = sum(p for _, names, p in scored if names)
        if total <= 0:
            break
        dkey = read(dtok)[0] if dtok is not None else None
        last, carry = i == len(steps) - 1, None
        for key, names, p in scored:
            if not names:
                continue
            p = weight * p / total
            if len(names) == 1:
                add(names, p)
            elif key == dkey and not last:
                carry = (names, p + (carry[1] if carry else 0.0))  # the next token of the path splits it
            else:
                add([decoded] if decoded in names else names, p)
        if carry is None or dkey is None:
            break
        weight, prefix = carry[1], dkey
    if carry is not None:
        add([decoded] if decoded in carry[0] else carry[0], carry[1])
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
    """A chat completion's body as the payload that is cached and parsed: content, finish_reason, usage, the
    top_logprobs of the token that carries the label (the first token of a code answer; in a JSON answer the
    token where the label's value starts) and `label_path`: each token of the label's value, as
    [token, logprob, top_logprobs] (see probs_from_logprobs). A body that is not a chat completion gives
    finish_reason "invalid_response" (asked again). `bounds`: see `read_usage`."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {"content": None, "finish_reason": "invalid_response", "usage": {}, "top_logprobs": None}
    pt, ct, odd = read_usage(data.get("usage") if isinstance(data, dict) else None, bounds)
    top, path = None, None
    try:  # the server's logprobs, of whatever shape it sent: none when they are not the documented one
        content_lp = (choice.get("logprobs") or {}).get("content")
        if content_lp:
            at = 0 if code_mode else _label_token(content_lp)
            if at is not None:
                path = _label_path(content_lp, at, code_mode)
                top = path[0][2]
    except (KeyError, IndexError, TypeError, AttributeError):
        top, path = None, None
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)  # not an answer (it fails to parse and is asked again), but text
    return {
        "content": content,
        "finish_reason": choice.get("finish_reason"),
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, **({"unusable": odd} if odd else {})},
        "top_logprobs": top,
        **({"label_path": path} if path and len(path) > 1 else {}),
    }


def _label_path(content_lp: list[dict[str, Any]], at: int, code_mode: bool) -> list[list[Any]]:
    """The label value's tokens from index `at` to the one that closes it (at most 32), as
    [token, logprob, top_logprobs]."""
    path: list[list[Any]] = []
    for k in range(at, min(len(content_lp), at + 32)):
        t = content_lp[k]
        tok = str(t.get("token") or "")
        path.append([tok, t.get("logprob"), [[x.get("token"), x.get("logprob")] for x in t.get("top_logprobs") or []]])
        # The first token may hold the opening quote; a later quote closes the value.
        if code_mode or '"' in (tok.lstrip(_PUNCT) if k == at else tok):
            break
    return path


def _label_token(content_lp: list[dict[str, Any]]) -> int | None:
    """Index of the token where a JSON answer's label value starts: its top_logprobs are the label distribution."""
    acc = ""
    for k, t in enumerate(content_lp):
        acc += str(t.get("token") or "")
        if _LABEL_START.search(acc):
            return k
    return None
