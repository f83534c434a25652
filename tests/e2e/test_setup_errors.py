"""Setup mistakes a user can make get one clear line before any paid call, and never a traceback."""

import pytest
import yaml
from conftest import assert_one_line_error, run_cli, write_config, write_corpus


def _label(tmp_path, cfg, env=None):
    return run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), env=env)


@pytest.mark.slow
def test_unset_api_key_env_stops_before_the_first_call(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 5)
    judges = [{"name": "a", "model": "m", "base_url": fake.base_url, "api_key_env": "LLMLABEL_TEST_UNSET_KEY"}]
    cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
    assert_one_line_error(_label(tmp_path, cfg), "$LLMLABEL_TEST_UNSET_KEY", "is not set")
    assert fake.requests == 0
    # A local server that needs no key (no api_key_env in the config) still runs keyless.
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    assert _label(tmp_path, cfg).returncode == 0


def test_credentials_in_base_url_are_refused_and_never_shown(tmp_path):
    write_corpus(tmp_path / "in.csv", 5)
    judges = [{"name": "a", "model": "m", "base_url": "http://bob:hunter2-secret@127.0.0.1:9/v1"}]
    cfg = write_config(tmp_path / "c.yaml", None, judges=judges)
    r = _label(tmp_path, cfg)
    assert_one_line_error(r, "must not contain a user name or password")
    assert "hunter2-secret" not in r.stderr + r.stdout


@pytest.mark.slow
def test_corrupt_cache_database_names_the_file_and_the_fix(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    (tmp_path / "cache").mkdir()
    db = tmp_path / "cache" / "responses.sqlite3"
    db.write_bytes(b"this is not a database at all" * 100)
    assert_one_line_error(_label(tmp_path, cfg), str(db), "move it away")
    # A truncated one: a real cache cut in half.
    db.unlink()
    assert _label(tmp_path, cfg).returncode == 0
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    for extra in ("-wal", "-shm"):
        (db.parent / (db.name + extra)).unlink(missing_ok=True)
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "o2.jsonl"))
    assert_one_line_error(r, str(db), "move it away")


def test_failing_prompt_template_names_the_template_and_line(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 5)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "label.j2").write_text(
        "{% block system %}\nYou label texts.\n{{ 1/0 }}\n{% endblock %}\n{% block user %}{{ text }}{% endblock %}\n"
    )
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, prompts_dir=str(prompts))
    assert_one_line_error(_label(tmp_path, cfg), "prompt template 'label'", "line 3", "ZeroDivisionError")
    assert fake.requests == 0


def test_no_judge_no_key_no_local_extra_says_a_key_or_endpoint_is_missing(tmp_path):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = yaml.safe_load(write_config(tmp_path / "c.yaml", None).read_text())
    assert "judges" not in cfg
    # No llama-cpp-python: importlib's find_spec sees None in sys.modules.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['llama_cpp'] = None\n")
    import os

    path = os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    r = _label(tmp_path, tmp_path / "c.yaml", env={"PYTHONPATH": path})
    assert_one_line_error(r, "OPENAI_API_KEY", "no judge", "llama-cpp-python is not installed")
