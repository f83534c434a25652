from pathlib import Path

import pytest

from llmlabel.config import load_config, parse_config
from llmlabel.errors import ConfigError


def cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_contract_from_the_issue(tmp_path):
    c = load_config(
        cfg(
            tmp_path,
            """
task:
  name: trec
  instructions: Classify the question.
  labels: {ABBR: abbreviation, DESC: description}
  text_column: text
  id_column: id
  examples: [{text: "What does NASA stand for?", label: ABBR}]
judges:
  - {name: a, model: gpt-4o-mini, base_url: "http://localhost:1/v1", api_key_env: MY_KEY, concurrency: 32,
     temperature: 0, price_per_million: {input: 0.15, output: 0.6}}
mode: label
aggregate: majority
cache_dir: .llmlabel-cache
""",
        )
    )
    assert c.task.label_names == ["ABBR", "DESC"]
    assert c.judges[0].price_per_million.output == 0.6
    assert c.judges[0].api_key_env == "MY_KEY"


def test_labels_as_list(tmp_path):
    c = load_config(cfg(tmp_path, "task: {labels: [a, b]}"))
    assert c.task.labels == {"a": "", "b": ""}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("task: {labels: [a, b]}\nbogus: 1", "unknown key 'bogus'"),
        ("task: {labels: [a, b]}\njudges: [{name: x, model: m, concurrency: 0}]", "'judges.0.concurrency'"),
        ("task: {labels: []}", "at least two labels"),
        ("task: {labels: [a]}", "at least two labels"),
        ("task: {instructions: x}", "'task.labels' is required"),
        ("task: {labels: [a, b]}\njudges: [{name: x, model: m, base_url: 'localhost:8000'}]", "must start with http"),
        ("task: {labels: [a, b]}\naggregate: median", "'aggregate'"),
        ("task: {labels: [a, b]\n  oops", "malformed YAML at line"),
        ("- just\n- a list", "must be a YAML mapping"),
        ("task: {labels: [a, b]}\njudges: [{name: x, model: m}, {name: x, model: n}]", "judge names must be unique"),
        ("task: {labels: [a, '', b]}", "label '' is blank"),
        ("task: {labels: [a, ' ', b]}", "label ' ' is blank"),
        ("task: {labels: [a, b, a]}", "label 'a' is given twice"),
        ("task: {labels: [Pos, neg, 'pos ']}", "the same as 'Pos' but for case or spaces"),
        ("task: {labels: {a: x, '': y}}", "label '' is blank"),
        (
            "task: {labels: [a, b]}\njudges: [{name: x, model: m, price_per_million: {input: .inf}}]",
            "price_per_million",
        ),
    ],
)
def test_errors_name_file_field_and_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(cfg(tmp_path, text))
    msg = str(e.value)
    assert expected in msg
    assert str(tmp_path / "c.yaml") in msg
    assert "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_examples_must_use_known_labels():
    with pytest.raises(ConfigError, match="example 0 uses label 'zzz'"):
        parse_config({"task": {"labels": ["a", "b"], "examples": [{"text": "t", "label": "zzz"}]}})


def test_yaml_labels_stay_the_strings_written(tmp_path) -> None:
    from llmlabel.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("task:\n  labels: [yes, no, on, off]\njudges: [{name: a, model: m}]\ncascade: {enabled: true}\n")
    cfg = load_config(p)
    assert cfg.task.label_names == ["yes", "no", "on", "off"]
    assert cfg.cascade is not None and cfg.cascade.enabled is True
    p.write_text("task:\n  labels: {yes: agree, no: disagree}\n")
    assert load_config(p).task.label_names == ["yes", "no"]


@pytest.mark.parametrize("labels", ["[true, false]", "[null, x]", "[0.10, 0.20]"])
def test_yaml_labels_that_are_not_strings_are_refused(tmp_path, labels: str) -> None:
    from llmlabel.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text(f"task:\n  labels: {labels}\n")
    with pytest.raises(ConfigError, match="quote it"):
        load_config(p)
