"""$LLMLABEL_LOCAL_TIMEOUT: the embedded judges' per-request timeout (a slow or loaded machine's setting)."""

from __future__ import annotations

import pytest

from llmlabel.local.models import LocalError
from llmlabel.local.servers import LOCAL_TIMEOUT, LocalEnsemble, Server, State


def _state() -> State:
    return State(servers=[Server(pid=1, port=8123, models=["qwen2.5-coder-0.5b"], log="l", config="c")])


def test_the_embedded_judges_take_their_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlabel.pipeline.lifecycle import local_judges

    monkeypatch.delenv("LLMLABEL_LOCAL_TIMEOUT", raising=False)
    assert _state().judges()[0]["timeout"] == LOCAL_TIMEOUT == 300.0  # unset: longer than an API judge's 60 s
    monkeypatch.setenv("LLMLABEL_LOCAL_TIMEOUT", "600")
    (judge,) = _state().judges()
    assert judge["timeout"] == 600.0 and local_judges([judge])[0].timeout == 600.0


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "inf", "nan"])
def test_a_wrong_timeout_is_one_line_before_any_server_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path, raw: str
) -> None:
    monkeypatch.setenv("LLMLABEL_LOCAL_TIMEOUT", raw)
    ens = LocalEnsemble(tmp_path / "state")
    with pytest.raises(LocalError) as e:
        ens.start()
    assert str(e.value) == f"LLMLABEL_LOCAL_TIMEOUT must be a number of seconds > 0, not {raw!r}"
    assert not ens.owned and not (tmp_path / "state").exists()
