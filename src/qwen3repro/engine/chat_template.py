"""Renders a conversation with the chat template stored in a GGUF file, inside jinja2's sandbox.

A template in model metadata is untrusted code: llama-cpp-python rendered one with a plain jinja2
Environment and a crafted GGUF ran shell commands (CVE-2024-34359). The immutable sandbox refuses
attribute tricks and mutation of the objects passed in. The environment is the one transformers
builds for apply_chat_template (trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII), so both render the same text.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen3repro.errors import UserError

ROLES = ("system", "user", "assistant", "tool")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise UserError(f"chat template: syntax error at line {e.lineno}: {e.message}") from None


def special_tokens(fields: dict, tokens: list[str]) -> dict[str, str]:
    """bos_token, eos_token, pad_token and unk_token as a GGUF names them, for the template."""
    out = {}
    for name in ("bos", "eos", "pad", "unk"):
        i = fields.get(f"tokenizer.ggml.{name}_token_id")
        if isinstance(i, int) and 0 <= i < len(tokens):
            out[f"{name}_token"] = tokens[i]
    return out


def check_messages(messages, source: str = "messages") -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{source}: a conversation is a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"{source}: message {i} needs a role ({', '.join(ROLES)}) and a string content")
    return messages


def render(
    source: str,
    messages: list[dict],
    add_generation_prompt: bool = True,
    enable_thinking: bool = True,
    special_tokens: dict[str, str] | None = None,
    messages_from: str = "messages",
) -> str:
    """The prompt text for `messages` (named `messages_from` in errors), with the variables
    transformers passes to the template."""
    template = compile_template(source)
    try:
        return template.render(
            messages=check_messages(messages, messages_from),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            **(special_tokens or {}),
        )
    except jinja2.exceptions.SecurityError as e:
        raise UserError(f"chat template: refused by the sandbox: {e}") from None
    except jinja2.exceptions.TemplateError as e:
        raise UserError(f"chat template: {e}") from None
