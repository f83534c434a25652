"""The YAML config: task, judges and run options, validated with pydantic."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from llmlabel.errors import ConfigError
from llmlabel.taxonomy import Taxonomy

Mode = Literal["label", "candidates"]
Aggregate = Literal["majority", "weighted", "dawid_skene"]
# json_object_schema: llama-cpp-python's form of schema-constrained output, {"type": "json_object", "schema": ...}
ResponseFormat = Literal["auto", "json_schema", "json_object_schema", "json_object", "text"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Example(_Strict):
    text: str
    label: str | None = None
    candidates: list[str] | None = None
    labels: list[str] | None = None  # a multi-label task's demonstration: its set of labels


class Task(_Strict):
    name: str = "task"
    instructions: str = "Classify the text."
    labels: dict[str, str]
    text_column: str = "text"
    id_column: str = "id"
    examples: list[Example] = []
    # Retrieved few-shot: a labeled pool (CSV/JSONL/Parquet with text_column and `label`); each row is shown
    # its examples_k most similar pool rows (TF-IDF cosine) as demonstrations, after the shared prefix.
    examples_file: str | None = None
    examples_k: int = Field(4, ge=1, le=32)
    # Multi-label: each text gets a SET of labels. Judges answer a list; each label is then decided on its own
    # (its probability: the judges' weighted vote for it, or a per-label Dawid-Skene over the whole job).
    multi_label: bool = False
    allow_empty: bool = False  # multi-label: a text may get no label at all (else: at least its likeliest)
    label_threshold: float = Field(0.5, gt=0, lt=1)  # multi-label: a label is kept at this probability or above
    # Many labels: each text is shown only the `shortlist` labels nearest to it (llm/shortlist.py), and on
    # "none of these" the next ones, `shortlist_rounds` lists at most. None: every label in every prompt.
    shortlist: int | None = Field(None, ge=2, le=200)
    shortlist_rounds: int = Field(2, ge=1, le=20)
    shortlist_pinned: list[str] = []  # labels on every shortlist (a catch-all: "other", "out of scope")
    # A taxonomy (docs/taxonomy.md): a tree of labels, or a JSON file of one, labeled top-down. Its nodes are
    # the labels (`labels` may describe some of them); a level whose combined confidence is below
    # `taxonomy_threshold` is not taken: the row stops at the parent.
    taxonomy: dict[str, Any] | None = None
    taxonomy_threshold: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _taxonomy_labels(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("taxonomy") is None:
            return data
        tax = Taxonomy.load(data["taxonomy"])
        given = data.get("labels") or {}
        given = dict.fromkeys(given, "") if isinstance(given, list) else given
        if not isinstance(given, dict):
            raise ValueError("with a taxonomy, task.labels (optional) maps node names to descriptions")
        names = tax.names()
        unknown = [k for k in given if str(k) not in names]
        if unknown:
            raise ValueError(f"label {unknown[0]!r} is not a node of task.taxonomy; fix the name or remove it")
        desc = {str(k): v for k, v in given.items()}
        return {**data, "taxonomy": tax.as_tree(), "labels": {n: desc.get(n) or "" for n in names}}

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            names = [_label_name(x) for x in v]
            _unique_labels(names)
            return {x: "" for x in names}
        if isinstance(v, dict):
            _unique_labels([_label_name(k) for k in v])
        if isinstance(v, dict):
            return {_label_name(k): "" if d is None else str(d) for k, d in v.items()}
        return v

    @field_validator("labels")
    @classmethod
    def _at_least_two(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError("a task needs at least two labels")
        return v

    @model_validator(mode="after")
    def _examples_use_known_labels(self) -> "Task":
        for i, ex in enumerate(self.examples):
            for lab in ([ex.label] if ex.label else []) + (ex.candidates or []) + (ex.labels or []):
                if lab not in self.labels:
                    raise ValueError(f"example {i} uses label {lab!r}, which is not in task.labels")
        return self

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)


def _unique_labels(names: list[str]) -> None:
    """Labels a model's answer can name: not blank, each once (answers are matched ignoring case and the
    spaces around them, so `Pos` and `pos `, or `a` twice, could not be told apart)."""
    seen: dict[str, str] = {}
    for x in names:
        if not x.strip():
            raise ValueError(f"label {x!r} is blank; every label needs a name a model can answer with")
        key = x.strip().casefold()
        if key in seen:
            same = "given twice" if seen[key] == x else f"the same as {seen[key]!r} but for case or spaces"
            raise ValueError(f"label {x!r} is {same}; give each label once")
        seen[key] = x


def _label_name(x: Any) -> str:
    # A label is the string the user wrote: YAML's true/false/null (or a float, which YAML rounds) cannot be
    # turned back into what was typed, so such a label is refused instead of asking the model for "True".
    if isinstance(x, str):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    raise ValueError(f"label {x!r} is not a string; quote it in the YAML, e.g. labels: ['true', 'false']")


class Price(_Strict):
    # finite: a price of .inf would make every ledger and budget infinite
    input: float = Field(0.0, ge=0, allow_inf_nan=False)
    output: float = Field(0.0, ge=0, allow_inf_nan=False)
    # The Batch API's price (`label --batch`); unset: half the online price (OpenAI's batch discount).
    batch_input: float | None = Field(None, ge=0, allow_inf_nan=False)
    batch_output: float | None = Field(None, ge=0, allow_inf_nan=False)


class Judge(_Strict):
    name: str
    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    # The key itself is only ever read from the environment; it never lives in a config object.
    concurrency: int = Field(16, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = None
    # Self-consistency: each row is asked `samples` times at this temperature (sample i: seed + i when a seed
    # is set, and its own cache key); the answer is the vote, and its confidence the vote share.
    samples: int = Field(1, ge=1, le=32)
    max_tokens: int | None = Field(None, ge=1)
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(6, ge=1, le=50)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    price_per_million: Price = Price()
    response_format: ResponseFormat = "auto"
    logprobs: bool = False
    # Batch Calibration (Zhou et al. 2024): at the whole-job refit, the judge's (content-free calibrated)
    # label distributions are divided by their mean over the job's rows. Needs logprobs; one label a text.
    batch_calibration: bool = False
    # One Yes/No question per label ("does this label fit the text?", the label's name and description after
    # the text) instead of one question for the whole label set; the label distribution is each label's
    # odds of Yes, normalized (ensemble.combine.combine_fits), as NLI zero-shot classifiers read entailment. K requests a row, whose shared start
    # (instructions and text) a server's prompt cache reuses. Needs logprobs; one label a text. Label questions
    # only: a run that asks for candidate sets or verdicts (audits, review kinds) asks this judge as usual.
    per_label: bool = False
    max_text_tokens: int = Field(3000, ge=16)
    # `label --batch`: the provider's limits per batch input file (OpenAI: 50,000 requests, 200 MB).
    batch_max_requests: int = Field(50_000, ge=1)
    batch_max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    weight: float | None = None
    prompt: str | None = None  # a template name overriding the mode's default for this judge
    # The endpoint's identity in cache keys (default: base_url). Set it when one model is served at changing
    # URLs (local servers on free ports, a load balancer) so that its answers stay cached.
    cache_as: str | None = None
    # aiohttp: direct requests, ~3.5x less CPU per call than the SDK (see BENCHMARKS.md); sdk: the openai
    # SDK's AsyncOpenAI over httpx (what tests intercept with respx).
    http_backend: Literal["aiohttp", "sdk"] = "aiohttp"

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https://")
        if v is not None and "@" in v.split("://", 1)[1].split("/", 1)[0]:
            # user:password in the URL would be printed and logged wherever the URL is: refused, not shown.
            raise ValueError(
                "base_url must not contain a user name or password (user:password@host); "
                "put the key in the variable named by api_key_env"
            )
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _samples_need_temperature(self) -> "Judge":
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(
                f"samples: {self.samples} with temperature 0 asks the same greedy answer {self.samples} times; "
                "set a temperature > 0 (e.g. 0.7) or samples: 1"
            )
        return self

    @model_validator(mode="after")
    def _batch_calibration_needs_logprobs(self) -> "Judge":
        if self.batch_calibration and not self.logprobs:
            raise ValueError(
                f"judge '{self.name}': batch_calibration divides label distributions, which come from logprobs; "
                "set logprobs: true or remove batch_calibration"
            )
        return self

    @model_validator(mode="after")
    def _per_label_alone(self) -> "Judge":
        if not self.per_label:
            return self
        if not self.logprobs:
            raise ValueError(
                f"judge '{self.name}': per_label reads each label's P(Yes) from logprobs; "
                "set logprobs: true or remove per_label"
            )
        if self.samples > 1:
            raise ValueError(f"judge '{self.name}': per_label does not combine with samples > 1; set samples: 1")
        if self.prompt is not None:
            raise ValueError(
                f"judge '{self.name}': per_label asks its own Yes/No prompt (fits.j2, which prompts_dir may "
                "override); remove prompt"
            )
        return self

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env)

    def key_error(self) -> str | None:
        """Why this judge has no key to send, or None: its key is set, or its base_url is a server that needs
        none (a config that names api_key_env says that its server needs one)."""
        if self.api_key():
            return None
        if "api_key_env" in self.model_fields_set:
            return (
                f"judge '{self.name}': the variable ${self.api_key_env} named by its api_key_env is not set; "
                "set it (or remove api_key_env for a server that needs no key)"
            )
        if self.base_url is None:
            return (
                f"judge '{self.name}' has no API key: set ${self.api_key_env} "
                "(or give the judge a base_url for a server that needs none)"
            )
        return None


class Cascade(_Strict):
    enabled: bool = True
    threshold: float = Field(0.8, ge=0, le=1)
    # The first rows ask every judge; judges uninformative on them (one label to everything, guessing) then
    # never end a row. 0: no probe. Fewer than 20 rows flag nothing (ensemble.votes.MIN_ROWS); on 32 TREC
    # rows the check flagged the one good judge of three (real_quality_cascade_probe32), on 60 the two bad.
    probe_rows: int = Field(64, ge=0)


class Config(_Strict):
    task: Task
    judges: list[Judge] = []
    mode: Mode = "label"
    aggregate: Aggregate = "majority"
    cache_dir: str = ".llmlabel-cache"
    prompts_dir: str | None = None
    cascade: Cascade | None = None
    gold: str | None = None  # a file of id,label rows that anchors weighted / dawid_skene
    _source: str | None = PrivateAttr(None)  # the file it was loaded from (no output may overwrite it)

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def kind(self) -> str:
        """The prompt kind a run of this config asks: its mode, or "multilabel" for a multi-label task."""
        if self.task.taxonomy is not None:
            return "taxonomy"
        return "multilabel" if self.task.multi_label else self.mode

    @model_validator(mode="after")
    def _unique_judge_names(self) -> "Config":
        names = [j.name for j in self.judges]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"judge names must be unique; repeated: {', '.join(sorted(dup))}")
        return self

    @model_validator(mode="after")
    def _multi_label_in_label_mode(self) -> "Config":
        if self.task.multi_label and self.mode != "label":
            raise ValueError(
                f"task.multi_label works with mode: label (judges answer a set of labels), not {self.mode}; "
                "remove mode or multi_label"
            )
        if self.task.multi_label and self.cascade is not None and self.cascade.enabled:
            raise ValueError("a cascade stops on one agreed label; remove cascade for a multi-label task")
        bad = [lab for lab in self.task.labels if "|" in lab] if self.task.multi_label else []
        if bad:
            raise ValueError(f"label {bad[0]!r} contains '|', which joins a multi-label row's labels; rename it")
        if self.task.shortlist is not None and (self.task.multi_label or self.mode != "label"):
            raise ValueError("task.shortlist works with one label per text in mode: label; remove it for this task")
        pinned = self.task.shortlist_pinned
        if pinned and (self.task.shortlist is None or len(pinned) >= self.task.shortlist):
            raise ValueError("task.shortlist_pinned needs a task.shortlist longer than the pinned labels; fix either")
        bad = [lab for lab in pinned if lab not in self.task.labels]
        if bad:
            raise ValueError(f"task.shortlist_pinned: {bad[0]!r} is not in task.labels; fix the name")
        if self.task.shortlist is not None and any(j.samples > 1 for j in self.judges):
            raise ValueError("samples > 1 (self-consistency) does not combine with task.shortlist; set samples: 1")
        if self.task.multi_label and any(j.samples > 1 for j in self.judges):
            raise ValueError("samples > 1 (self-consistency) votes on one label; set samples: 1 for a multi-label task")
        if self.task.taxonomy is not None:
            _taxonomy_fits(self)
        batch = [j.name for j in self.judges if j.batch_calibration]
        if batch and (self.task.multi_label or self.task.taxonomy is not None or self.task.shortlist is not None):
            raise ValueError(
                f"judge '{batch[0]}': batch_calibration works on one label a text over the whole label set, not "
                "with task.multi_label, task.taxonomy or task.shortlist; remove batch_calibration"
            )
        if batch and self.mode != "label":
            raise ValueError(f"judge '{batch[0]}': batch_calibration works in mode: label; remove it for {self.mode}")
        per = [j.name for j in self.judges if j.per_label]
        problem = per_label_refused(self.task)
        if per and problem:
            raise ValueError(f"judge '{per[0]}': {problem}")
        return self

    @model_validator(mode="after")
    def _samples_in_label_mode(self) -> "Config":
        if self.mode != "label":
            samples_error(self.judges, self.mode)
        return self


def _taxonomy_fits(cfg: Config) -> None:
    """A taxonomy is decided level by level while each row runs (docs/taxonomy.md): what cannot follow that."""
    if cfg.task.multi_label or cfg.task.shortlist is not None or cfg.mode != "label":
        raise ValueError("task.taxonomy works with one path per text in mode: label; remove multi_label/shortlist/mode")
    if cfg.cascade is not None and cfg.cascade.enabled:
        raise ValueError("a cascade does not combine with task.taxonomy yet; remove cascade")
    if cfg.aggregate != "majority":
        raise ValueError(
            "a taxonomy's levels are combined per row as they are asked (judge weights apply); "
            f"aggregate: {cfg.aggregate} is not supported with task.taxonomy, use majority"
        )
    if any(j.samples > 1 for j in cfg.judges):
        raise ValueError("samples > 1 (self-consistency) does not combine with task.taxonomy; set samples: 1")


def per_label_refused(task: Task) -> str | None:
    """Why a task's judges cannot ask per-label questions (config refuses per_label there, and the embedded
    judges leave it off), or None."""
    if task.multi_label or task.taxonomy is not None or task.shortlist is not None:
        return (
            "per_label asks about every label of one label a text, not with task.multi_label, task.taxonomy or "
            "task.shortlist; remove per_label"
        )
    if task.examples or task.examples_file:
        return "per_label's Yes/No questions show no demonstrations; remove per_label or task.examples / task.examples_file"
    return None


def samples_error(judges: list[Judge], kind: str) -> None:
    """Self-consistency votes on one label: refused (ValueError) for candidate sets and audits' verdicts."""
    many = [j.name for j in judges if j.samples > 1]
    if many and kind != "label":
        raise ValueError(
            f"judge '{many[0]}': samples > 1 (self-consistency) works in label mode only, not {kind}; "
            "set samples: 1 for this run"
        )


def default_judges() -> list[Judge]:
    """One judge from the OpenAI environment variables, or none (then the embedded local models are used)."""
    base = os.environ.get("OPENAI_BASE_URL")
    if not base and not os.environ.get("OPENAI_API_KEY"):
        return []
    return [Judge(name="default", model=os.environ.get("LLMLABEL_MODEL", "gpt-4o-mini"), base_url=base)]


def _describe(err: Any) -> str:  # a pydantic ErrorDetails
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}'; remove it or check its spelling"
    if err["type"] == "missing":
        return f"'{loc}' is required; add it"
    msg = err["msg"].removeprefix("Value error, ")
    return f"'{loc}': {msg}"


def parse_config(data: Any, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping with at least a 'task:' section")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_describe(first)}{more}") from None
    return cfg


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans; yes/no/on/off stay the strings the user wrote."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found; pass an existing YAML file with -c")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_YamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}; fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save the config as UTF-8") from None
    task = data.get("task") if isinstance(data, dict) else None
    tax = task.get("taxonomy") if isinstance(task, dict) else None
    if isinstance(tax, str) and not Path(tax).is_absolute():  # a taxonomy file next to the config
        task["taxonomy"] = str((p.parent / tax).resolve())  # type: ignore[index]
    cfg = parse_config(data, str(p))
    cfg._source = str(p.resolve())
    if cfg.prompts_dir and not Path(cfg.prompts_dir).is_absolute():
        cfg.prompts_dir = str((p.parent / cfg.prompts_dir).resolve())
    if cfg.task.examples_file and not Path(cfg.task.examples_file).is_absolute():
        cfg.task.examples_file = str((p.parent / cfg.task.examples_file).resolve())
    return cfg
