"""OpenAI's wire format for ``fasttx serve``: request bodies checked and turned into
``EngineRequest``s, and the response, chunk and error objects built from the engine's events.

No web framework here: the app (app.py) hands in the parsed JSON and sends out the dicts. Every
problem with a request is a ``ProtocolError`` (status 400 unless it says otherwise) naming the
field, so that a client never sees a 500 for its own input.

Options map to transformers' names (docs/API.md, "Serving and scale-out"): ``temperature: 0`` is
greedy, ``temperature > 0`` samples, ``max_tokens`` is ``max_new_tokens``, ``n`` is
``num_return_sequences``; an option the request leaves out takes OpenAI's default, not the model's
generation config, so a request means the same on every model. What the generation config still
gives: the EOS ids, pad and forced tokens, bad words.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .engine import EngineRequest, TokenLogprob

log = logging.getLogger("fasttx.serve")

# OpenAI's legacy default for /v1/completions.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# /v1/chat/completions without max_tokens generates up to the model's position limit, as OpenAI
# does up to the context window; a model with no such limit (relative positions) stops here.
CHAT_DEFAULT_MAX_TOKENS_UNBOUNDED = 4096
# OpenAI's bounds: n up to 128 choices, top_logprobs up to 20.
MAX_N = 128
MAX_TOP_LOGPROBS = 20
# A logprob of -inf (a token the processors removed) is not valid JSON; clients get this instead,
# as from vLLM.
LOGPROB_FLOOR = -9999.0
# Integers beyond int64 (which OpenAI's API and most clients use) are refused rather than carried.
INT64_MAX = 2**63 - 1

# Fields that would change what the client gets and that fasttx cannot honour: refused by name
# rather than silently ignored. Each maps to the values that leave the meaning unchanged.
_UNSUPPORTED_COMMON = {
    "logit_bias": (None, {}),
    "best_of": (None, 1),
}
_UNSUPPORTED_CHAT = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "web_search_options": (None,),
}
_UNSUPPORTED_COMPLETIONS = {
    "echo": (None, False),
    "suffix": (None, ""),
}
# Fields read by the parsers below, plus OpenAI fields that change nothing here (accounting,
# storage, latency hints): none of these is reported as unknown.
_KNOWN_CHAT = {
    "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stop", "seed", "stream", "stream_options", "presence_penalty", "frequency_penalty",
    "logprobs", "top_logprobs", "response_format", "top_k", "min_p", "repetition_penalty",
    "num_beams", "user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction",
    "reasoning_effort", "safety_identifier", "prompt_cache_key", "verbosity",
}  # fmt: skip
_KNOWN_COMPLETIONS = {
    "prompt", "model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
    "stream_options", "presence_penalty", "frequency_penalty", "logprobs", "response_format",
    "top_k", "min_p", "repetition_penalty", "num_beams", "user",
}  # fmt: skip


class ProtocolError(Exception):
    """A request the server refuses; ``status`` 400 unless said otherwise."""

    def __init__(self, message: str, param: Optional[str] = None, *, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


def error_body(message: str, *, type: str = "invalid_request_error", param: Optional[str] = None, code: Any = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------- field checks


def _number(body: dict, name: str, default, lo=None, hi=None, *, lo_open: bool = False):
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v):
        raise ProtocolError(f"'{name}' must be a finite number, got {v!r}", name)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ProtocolError(f"'{name}' must be {'>' if lo_open else '>='} {lo}, got {v!r}", name)
    if hi is not None and v > hi:
        raise ProtocolError(f"'{name}' must be <= {hi}, got {v!r}", name)
    return float(v)


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond float's range (JSON integers have no bound)
        return False


def _integer(body: dict, name: str, default, lo=None, hi=INT64_MAX):
    v = body.get(name)
    if v is None:
        return default
    # JSON has one number type: 2.0 is an integer to most clients.
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"'{name}' must be an integer, got {v!r}", name)
    if lo is not None and v < lo:
        raise ProtocolError(f"'{name}' must be >= {lo}, got {v!r}", name)
    if hi is not None and v > hi:
        raise ProtocolError(f"'{name}' must be <= {hi}, got {v!r}", name)
    return v


def _boolean(body: dict, name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ProtocolError(f"'{name}' must be true or false, got {v!r}", name)
    return v


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ProtocolError(f"'stop' must be a string or a list of strings, got {v!r}", "stop")
    if any(s == "" for s in items):
        raise ProtocolError("'stop' strings must not be empty", "stop")
    return items


def _refuse_unsupported(body: dict, table: dict) -> None:
    for name, harmless in table.items():
        if name in body and body[name] not in harmless:
            raise ProtocolError(f"'{name}' is not supported by this server (fasttx serve)", name)


def _response_format(body: dict) -> dict:
    """The generate options of ``response_format``: ``{"type": "json_schema", "json_schema":
    {"schema": {...}}}`` constrains the output to the schema, ``{"type": "json_object"}`` to any
    JSON object, ``{"type": "text"}`` (or none) leaves it free."""
    v = body.get("response_format")
    if v is None:
        return {}
    kind = v.get("type") if isinstance(v, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"json_schema": {"type": "object"}}
    if kind == "json_schema":
        spec = v.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ProtocolError(
                "response_format 'json_schema' needs {\"json_schema\": {\"schema\": {...}}} with the schema as an object",
                "response_format",
            )
        return {"json_schema": schema}
    raise ProtocolError(
        f"'response_format' must be {{\"type\": \"text\"}}, {{\"type\": \"json_object\"}} or "
        f"{{\"type\": \"json_schema\", ...}}, got {v!r}",
        "response_format",
    )


def _warn_unknown(body: dict, known: set, endpoint: str) -> None:
    unknown = sorted(set(body) - known - set(_UNSUPPORTED_COMMON) - set(_UNSUPPORTED_CHAT) - set(_UNSUPPORTED_COMPLETIONS))
    if unknown:
        log.warning("%s: ignoring unknown field(s) %s", endpoint, ", ".join(unknown))


# ---------------------------------------------------------------------------- requests


@dataclass
class Prepared:
    """A checked request: the engine requests to submit and how their sequences map to choices."""

    chat: bool
    requests: list[EngineRequest]
    # choice_of[k][s]: the choice index of sequence s of requests[k].
    choice_of: list[list[int]]
    choices: int
    stream: bool
    include_usage: bool
    logprobs: Optional[int]
    # Prompt tokens as OpenAI counts them: once per prompt, whatever n is.
    prompt_tokens: int


def _sampling(body: dict, max_new_tokens: int, n: int) -> tuple[dict, float, float]:
    """Generation options in transformers' names, with OpenAI's defaults for what is left out."""
    temperature = _number(body, "temperature", 1.0, 0.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    top_k = _integer(body, "top_k", None, -1)
    min_p = _number(body, "min_p", None, 0.0, 1.0)
    repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.0, lo_open=True)
    num_beams = _integer(body, "num_beams", 1, 1)
    seed = _integer(body, "seed", None, 0)
    presence = _number(body, "presence_penalty", 0.0, -2.0, 2.0)
    frequency = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)
    options: dict = {
        "max_new_tokens": max_new_tokens,
        "do_sample": temperature > 0,
        "top_p": top_p,
        # vLLM spells "no top-k" -1; transformers 0 or None.
        "top_k": top_k if top_k and top_k > 0 else None,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
        "num_beams": num_beams,
        "num_return_sequences": n,
        "no_repeat_ngram_size": 0,
    }
    if temperature > 0:
        options["temperature"] = temperature
    stop = _stop(body)
    if stop:
        options["stop"] = stop
    if seed is not None:
        options["seed"] = seed
    return options, presence, frequency


def _max_tokens(body: dict, *names: str) -> Optional[int]:
    """The first of ``names`` the body sets (``max_completion_tokens`` before ``max_tokens``)."""
    for name in names:
        v = _integer(body, name, None, 1)
        if v is not None:
            return v
    return None


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = _boolean(body, "stream", False)
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise ProtocolError(f"'stream_options' must be an object, got {opts!r}", "stream_options")
    if not stream:
        raise ProtocolError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return stream, _boolean(opts, "include_usage", False)


def _model_field(body: dict) -> None:
    v = body.get("model")
    if v is not None and not isinstance(v, str):
        raise ProtocolError(f"'model' must be a string, got {v!r}", "model")


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ProtocolError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _message_content(i: int, content: Any) -> Any:
    """A message's content as the template expects it: a string; OpenAI's list of text parts is
    joined (as vLLM does for text-only templates). Images, audio, files: refused."""
    if isinstance(content, str) or content is None:
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ProtocolError(
                    f"messages[{i}].content[{j}]: only text parts are supported, got {kind!r}", "messages"
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise ProtocolError(f"messages[{i}].content must be a string or a list of text parts, got {content!r}", "messages")


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ProtocolError(f"messages[{i}] must be an object with a 'role' string", "messages")
        out.append({**m, "content": _message_content(i, m.get("content"))})
    return out


def _for_client(model, e: Exception) -> str:
    """An error message without the server's directories (the model's file name stays)."""
    where = str(model.path)
    return str(e).replace(where, os.path.basename(where.rstrip(os.sep)))


def _encode(model, text: str, add_special_tokens: bool, param: str) -> list[int]:
    try:
        ids = model._encode([text], add_special_tokens)[0]
    except ValueError as e:
        raise ProtocolError(_for_client(model, e), param) from None
    if not ids:
        raise ProtocolError(f"'{param}' encodes to no token: give some text", param)
    return ids


def parse_chat(body: Any, model) -> Prepared:
    """``POST /v1/chat/completions``: the tokens ``model.chat(messages, **options)`` would feed."""
    body = _object(body)
    _refuse_unsupported(body, {**_UNSUPPORTED_COMMON, **_UNSUPPORTED_CHAT})
    _warn_unknown(body, _KNOWN_CHAT, "/v1/chat/completions")
    constraint = _response_format(body)
    _model_field(body)
    messages = _messages(body)
    n = _integer(body, "n", 1, 1, MAX_N)
    max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")
    stream, include_usage = _stream_flags(body)
    logprobs = None
    want = _boolean(body, "logprobs", False)
    top = _integer(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not want:
        raise ProtocolError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    if want:
        logprobs = top or 0
    try:
        text = model.chat_prompt(messages)
    except ValueError as e:  # no template, or the template rejects the conversation
        raise ProtocolError(_for_client(model, e), "messages") from None
    prompt_ids = _encode(model, text, False, "messages")  # the rendered template has its specials
    if max_tokens is None:
        limit = model.max_positions
        if limit is None:
            max_tokens = CHAT_DEFAULT_MAX_TOKENS_UNBOUNDED
        elif len(prompt_ids) >= limit:
            raise ProtocolError(
                f"the conversation is {len(prompt_ids)} tokens, which leaves no room in the model's "
                f"{limit} positions: shorten it",
                "messages",
            )
        else:
            max_tokens = limit - len(prompt_ids)
    options, presence, frequency = _sampling(body, max_tokens, n)
    options.update(constraint)
    req = EngineRequest(prompt_ids, options, logprobs, presence, frequency)
    return Prepared(True, [req], [list(range(n))], n, stream, include_usage, logprobs, len(prompt_ids))


def _prompts(body: dict) -> list[str]:
    p = body.get("prompt")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p and all(isinstance(s, str) for s in p):
        return p
    if isinstance(p, list) and p and all(isinstance(t, int) or isinstance(t, list) for t in p):
        raise ProtocolError("prompts given as token ids are not supported: send the text", "prompt")
    raise ProtocolError("'prompt' must be a string or a non-empty list of strings", "prompt")


def parse_completion(body: Any, model) -> Prepared:
    """``POST /v1/completions``: the tokens ``model.generate(prompt, **options)`` would feed, one
    engine request per distinct prompt."""
    body = _object(body)
    _refuse_unsupported(body, {**_UNSUPPORTED_COMMON, **_UNSUPPORTED_COMPLETIONS})
    _warn_unknown(body, _KNOWN_COMPLETIONS, "/v1/completions")
    constraint = _response_format(body)
    _model_field(body)
    prompts = _prompts(body)
    n = _integer(body, "n", 1, 1, MAX_N)
    max_tokens = _max_tokens(body, "max_tokens")
    if max_tokens is None:
        max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    stream, include_usage = _stream_flags(body)
    logprobs = _integer(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    options, presence, frequency = _sampling(body, max_tokens, n)
    options.update(constraint)
    encoded = [_encode(model, p, True, "prompt") for p in prompts]
    # model.generate([p, p], ...) samples the second copy of a prompt as streams n..2n-1 of it:
    # the same draws as one request for 2n sequences. Greedy copies are equal anyway, and beam
    # search (one stream per input) keeps one request per copy.
    groups: dict[tuple, list[int]] = {}
    for i, ids in enumerate(encoded):
        key = tuple(ids) if options["do_sample"] and options["num_beams"] == 1 else (i,)
        groups.setdefault(key, []).append(i)
    requests, choice_of = [], []
    for positions in groups.values():
        opts = dict(options, num_return_sequences=n * len(positions))
        requests.append(EngineRequest(encoded[positions[0]], opts, logprobs, presence, frequency))
        choice_of.append([p * n + j for p in positions for j in range(n)])
    prompt_tokens = sum(len(ids) for ids in encoded)
    return Prepared(False, requests, choice_of, len(prompts) * n, stream, include_usage, logprobs, prompt_tokens)


# ---------------------------------------------------------------------------- responses


@dataclass
class Choice:
    """What a sequence has produced so far."""

    text: str = ""
    logprobs: list = field(default_factory=list)  # TokenLogprob entries
    finish_reason: Optional[str] = None
    completion_tokens: int = 0


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _lp(v: float) -> float:
    return max(float(v), LOGPROB_FLOOR) if v == v else LOGPROB_FLOOR


def _token_bytes(piece: str) -> list[int]:
    return list(piece.encode("utf-8", errors="replace"))


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict:
    """``choices[i].logprobs`` of a chat completion (or chunk)."""
    return {
        "content": [
            {
                "token": e.token,
                "logprob": _lp(e.logprob),
                "bytes": _token_bytes(e.token),
                "top_logprobs": [
                    {"token": t, "logprob": _lp(lp), "bytes": _token_bytes(t)} for t, lp in e.top
                ],
            }
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict:
    """``choices[i].logprobs`` of a text completion (or chunk): ``text_offset`` counts characters
    of the token pieces from ``offset`` (where this chunk starts in the completion)."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [_lp(e.logprob) for e in entries],
        "top_logprobs": [{t: _lp(lp) for t, lp in e.top} for e in entries],
        "text_offset": offsets,
    }


def chat_completion(rid: str, created: int, model_id: str, choices: list[Choice], prompt_tokens: int, logprobs: bool) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
    }


def text_completion(rid: str, created: int, model_id: str, choices: list[Choice], prompt_tokens: int, logprobs: bool) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model_id,
        "choices": [
            {
                "index": i,
                "text": c.text,
                "logprobs": completion_logprobs(c.logprobs) if logprobs else None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
    }


def chunk(rid: str, created: int, model_id: str, chat: bool, choices: list[dict], include_usage: bool) -> dict:
    """A streamed chunk (``chat.completion.chunk`` or ``text_completion``). With
    ``stream_options.include_usage`` every chunk carries ``usage: null`` but the last."""
    out: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model_id,
        "choices": choices,
    }
    if include_usage:
        out["usage"] = None
    return out


def chat_delta(index: int, delta: dict, logprobs: Optional[dict] = None, finish_reason: Optional[str] = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def text_delta(index: int, text: str, logprobs: Optional[dict] = None, finish_reason: Optional[str] = None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
