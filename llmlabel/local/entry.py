"""The server process: llama-cpp-python's own `python -m llama_cpp.server`, plus what our models need.

Runs in the child process started by servers.py (the labeling pipeline never imports it; the distill
featurizer `local-llm` takes `no_repack` from it, to load the model as the servers do): registers the
"gemma3" chat format, turns OpenAI json_schema requests into llama-cpp-python's form, and loads weights
without CPU repacking (see no_repack).
"""

from __future__ import annotations

import json
from typing import Any


def _message_text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _register_gemma3() -> None:
    from llama_cpp import llama_chat_format as lcf

    @lcf.register_chat_format("gemma3")
    def format_gemma3(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        # Gemma 3's official template: no system role; system text opens the first user turn.
        system = "\n\n".join(_message_text(m.get("content")) for m in messages if m["role"] == "system")
        out = []
        for m in messages:
            if m["role"] == "system":
                continue
            text = _message_text(m.get("content"))
            if system and m["role"] == "user":
                text, system = f"{system}\n\n{text}", ""
            out.append(f"<start_of_turn>{'model' if m['role'] == 'assistant' else 'user'}\n{text}<end_of_turn>\n")
        if system:  # only a system message was sent
            out.append(f"<start_of_turn>user\n{system}<end_of_turn>\n")
        out.append("<start_of_turn>model\n")  # BOS is added by the tokenizer (add_bos_token)
        return lcf.ChatFormatterResponse(prompt="".join(out), stop="<end_of_turn>")


def translate_response_format(body: bytes) -> bytes:
    """OpenAI `{"type":"json_schema","json_schema":{"schema":S}}` -> `{"type":"json_object","schema":S}`.

    llama-cpp-python's server rejects type json_schema (HTTP 500, pydantic literal_error) but
    constrains output with a grammar built from `schema` under json_object.
    """
    try:
        req = json.loads(body)
        rf = req.get("response_format")
    except (ValueError, AttributeError):
        return body
    if not isinstance(rf, dict) or rf.get("type") != "json_schema":
        return body
    schema = (rf.get("json_schema") or {}).get("schema")
    req["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    return json.dumps(req).encode()


class _JsonSchemaShim:
    """ASGI wrapper applying translate_response_format to chat completion requests."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client went away before sending the body
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        body = translate_response_format(body)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


def no_repack() -> None:
    """Load weights without llama.cpp's CPU repacking ("extra buffer types").

    With repacking, llama-cpp-python 0.3.x segfaults on the first batch of more than one token for
    Qwen2.5-Coder-0.5B (q5_0/q4_K tensors) on AVX-512 CPUs; without it the same model runs correctly.
    """
    import llama_cpp.llama_cpp as C  # type: ignore[import-not-found]

    default = C.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params


def serve() -> None:
    """Run `python -m llama_cpp.server` in this process with our chat format and json_schema shim."""
    import runpy

    import llama_cpp.server.app as app_mod  # type: ignore[import-not-found]

    no_repack()
    create_app = app_mod.create_app
    app_mod.create_app = lambda *a, **kw: _JsonSchemaShim(create_app(*a, **kw))
    _register_gemma3()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
