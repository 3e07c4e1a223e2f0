"""fasttx's OpenAI-compatible server under load, side by side with llama-cpp-python's server.

Usage::

    fasttx bench serve [--threads N] [--concurrency 1,4,16,64] [--requests-per-client 2] [--min-requests 8]
                       [--new-tokens 128] [--servers fasttx,llama-cpp-python] [--llama-cpp-python PYTHON]
                       [--gguf PATH] [--max-batch N] [--level-timeout 600] [--out BENCHMARKS-serve.json]

What it does
------------
1. Model: the SmolLM2-135M-Instruct Q4_1 GGUF that ``fasttx generate`` uses by default (found as
   ``fasttx bench smollm2`` finds it), or ``--gguf PATH``; the same file for both servers.
2. Servers, one after the other, never together, each a subprocess started by the benchmark on a
   free port of 127.0.0.1 and stopped after its levels:
   - ``fasttx``: ``python -m fasttx serve --model GGUF --threads T --max-batch B`` (B = at least the
     largest concurrency, so that every client of a level decodes in the running batch);
   - ``llama-cpp-python``: ``PYTHON -m llama_cpp.server --model GGUF --n_threads T
     --n_threads_batch T --interrupt_requests False`` (PYTHON: ``--llama-cpp-python``, default
     this interpreter).  It serves one request at a time; ``--interrupt_requests False`` turns
     off its default of cutting a streaming answer short with ``[DONE]`` as soon as another
     request waits (which would make it send fewer tokens than asked).
   Ready when ``GET /v1/models`` answers; then a warm-up: one non-streaming request (its
   ``usage.completion_tokens`` and text: what a request gives alone) and one streaming request.
3. Requests: ``POST /v1/chat/completions`` with ``fasttx bench smollm2``'s conversation ("Write a
   short news report about artificial intelligence."), ``max_tokens`` 128, ``temperature`` 0
   (greedy in both), ``stream`` true with ``stream_options.include_usage``; llama-cpp-python also
   gets ``repeat_penalty: 1.0`` (its server's default is 1.1; OpenAI's and fasttx's: none).
   Greedy decoding can end at EOS before 128 tokens: the token counts are the ones each answer
   reports, not assumed (the warm-up's count is printed).  llama-cpp-python keeps the previous
   request's tokens in its context and finds the same prompt there: after its first request its
   TTFT holds no prefill (fasttx prefills every prompt).
4. Levels (``--concurrency``): c clients in a closed loop (each sends its next request when its
   last one has ended) until the level's N = max(``--requests-per-client`` x c, ``--min-requests``)
   requests are sent; the level stops at ``--level-timeout`` seconds (requests still running are
   cut and counted as errors).  The client is plain asyncio (one connection per request,
   HTTP/1.1, chunked transfer and Server-Sent Events parsed here): no HTTP library needed.
5. Figures per (server, level), over the level's completed requests:
   - throughput: their completion tokens / the level's wall time (first request sent to last
     answer ended);
   - TTFT: request sent -> first chunk with content (the role-only chunk does not count);
   - per-token latency (TPOT): per request (end - first content) / (completion tokens - 1),
     end = ``data: [DONE]``; the chunk gaps (ITL) are in the JSON too;
   - p50 and p99 of each: percentiles with linear interpolation between the sorted values
     (numpy's default), so a p99 of fewer than 100 requests lies between the two largest;
   - completion tokens of a request: its streamed ``usage.completion_tokens`` where the server
     sends one (fasttx: EOS included when it ended the answer, as ``generate_ids`` counts); else
     the warm-up's count when the text equals the warm-up's (llama-cpp-python streams no usage;
     its counts leave EOS out); else its content chunks.  The JSON says which.
   - errors (HTTP status, broken stream, time cap), counted per level, never dropped.
6. Ratios per level: fasttx's throughput / llama-cpp-python's, and fasttx's p99 TTFT /
   llama-cpp-python's.  The issue's target: at 16 clients, throughput ratio >= 3 with the p99 TTFT
   ratio <= 1; the table says whether it is met.
7. JSON (``--out``): versions of each server's packages, each server's exact command line, the
   request bodies, the machine (CPU model, caches), every request's timings, each level's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

from .machine import default_threads, describe, machine_info
from .report import path_replacements, scrub_paths
from .runner import command_line
from .smollm2 import MESSAGES, find_gguf, sha256
from .stats import format_ratio, ratio
from .workers import worker_env

HOST = "127.0.0.1"
SERVERS = ("fasttx", "llama-cpp-python")
LABELS = {"fasttx": "fasttx serve", "llama-cpp-python": "llama_cpp.server"}
# Per server: modules its interpreter must have, and distributions whose versions are recorded.
REQUIRES = {"fasttx": ("fasttx._native", "fastapi", "uvicorn"),
            "llama-cpp-python": ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                                 "pydantic_settings")}
DISTRIBUTIONS = {"fasttx": ("fasttx", "fastapi", "uvicorn", "starlette"),
                 "llama-cpp-python": ("llama_cpp_python", "fastapi", "uvicorn", "starlette", "sse-starlette")}
CONCURRENCY = (1, 4, 16, 64)
NEW_TOKENS = 128
DEFAULT_OUT = "BENCHMARKS-serve.json"
CHAT_PATH = "/v1/chat/completions"
# llama-cpp-python's context: the chat prompt (about 40 tokens) and 128 new tokens fit with room.
LLAMA_N_CTX = 2048
# The target: at TARGET_CLIENTS clients, fasttx's throughput >= TARGET_RATIO x the
# reference's, with a p99 time to first token no worse.
TARGET_CLIENTS = 16
TARGET_RATIO = 3.0


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between the sorted
    values (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def p50_p99_ms(seconds: Sequence[float]) -> dict:
    """``{"p50": ms, "p99": ms, "n": count}`` (None where there are no values)."""
    p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
    return {"p50": None if p50 is None else 1000 * p50, "p99": None if p99 is None else 1000 * p99,
            "n": len(seconds)}


@dataclass
class RequestResult:
    """One streamed request, timed on the client's ``time.perf_counter`` clock."""

    start: float                                   # the request is about to be sent
    first: Optional[float] = None                  # the first chunk with content arrived
    end: Optional[float] = None                    # ``data: [DONE]`` arrived
    chunk_times: list = field(default_factory=list)  # arrival of every chunk with content
    pieces: list = field(default_factory=list)       # the content of those chunks
    usage_tokens: Optional[int] = None             # ``usage.completion_tokens`` when streamed
    finish_reason: Optional[str] = None
    error: Optional[str] = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def completion_tokens(r: RequestResult, warmup: Optional[dict]) -> tuple[int, str]:
    """``(tokens, source)`` of a completed request: its streamed usage; else the warm-up's count
    when it gave the warm-up's text (greedy: the same answer); else its content chunks."""
    if r.usage_tokens is not None:
        return r.usage_tokens, "usage"
    if warmup and warmup.get("completion_tokens") is not None and r.text == warmup.get("text"):
        return warmup["completion_tokens"], "warmup"
    return len(r.chunk_times), "chunks"


def time_per_output_token(r: RequestResult, tokens: int) -> Optional[float]:
    """(end - first content) / (tokens - 1): the decoding time per token after the first."""
    if tokens < 2 or r.first is None or r.end is None:
        return None
    return (r.end - r.first) / (tokens - 1)


def summarize_level(results: Sequence[RequestResult], wall_s: float, sent_limit: int,
                    warmup: Optional[dict] = None) -> dict:
    """A level's figures from its requests (see the module docstring, point 5)."""
    ok = [r for r in results if r.error is None]
    counted = [completion_tokens(r, warmup) for r in ok]
    tokens = [n for n, _ in counted]
    sources: dict = {}
    for _, source in counted:
        sources[source] = sources.get(source, 0) + 1
    errors: dict = {}
    for r in results:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    if len(results) < sent_limit:
        errors["not sent before the level's time cap"] = sent_limit - len(results)
    tpot = [t for t in (time_per_output_token(r, n) for r, n in zip(ok, tokens)) if t is not None]
    finish: dict = {}
    for r in ok:
        finish[str(r.finish_reason)] = finish.get(str(r.finish_reason), 0) + 1
    texts = {r.text for r in ok}
    return {
        "requests": sent_limit,
        "sent": len(results),
        "completed": len(ok),
        "errors": errors,
        "error_count": sum(errors.values()),
        "wall_s": wall_s,
        "completion_tokens": sum(tokens),
        "completion_tokens_per_request": {"min": min(tokens), "max": max(tokens)} if tokens else None,
        "token_counts_from": sources,
        "finish_reasons": finish,
        "distinct_texts": len(texts),
        "texts_equal_to_warmup": (sum(r.text == warmup.get("text") for r in ok)
                                  if warmup and warmup.get("text") is not None else None),
        "throughput_tokens_per_s": sum(tokens) / wall_s if wall_s > 0 and ok else None,
        "ttft_ms": p50_p99_ms([r.first - r.start for r in ok if r.first is not None]),
        "tpot_ms": p50_p99_ms(tpot),
        "itl_ms": p50_p99_ms([b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:])]),
        "e2e_ms": p50_p99_ms([r.end - r.start for r in ok if r.end is not None]),
    }


# ---------------------------------------------------------------------------
# HTTP/1.1 and Server-Sent Events, on asyncio streams
# ---------------------------------------------------------------------------


class HTTPError(Exception):
    """A response that is not HTTP as this client reads it (bad status line, chunk size, ...)."""


_LINE_END = re.compile(rb"\r\n|\n|\r")


class SSEParser:
    """Server-Sent Events from the bytes of a response body as they arrive.

    ``feed(bytes)`` returns the ``data`` of every event it completed (its ``data:`` lines joined
    with newlines); comments (``: ping``) and other fields are skipped.  Lines may end in CRLF
    (sse-starlette's), LF or CR, and may be split anywhere between two reads.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list = []

    def feed(self, chunk: bytes) -> list:
        self._buffer += chunk
        events = []
        pos = 0
        while True:
            m = _LINE_END.search(self._buffer, pos)
            # A CR at the very end may be the first half of a CRLF: wait for the next read.
            if m is None or (m.group() == b"\r" and m.end() == len(self._buffer)):
                break
            line = self._buffer[pos:m.start()].decode("utf-8")
            pos = m.end()
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value[1:] if value.startswith(" ") else value)
        self._buffer = self._buffer[pos:]
        return events


async def send_request(host: str, port: int, method: str, path: str, body: Optional[dict] = None):
    """Open a connection, send one request (``Connection: close``), read the status line and the
    headers: ``(reader, writer, status, headers)`` with lower-case header names."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = b"" if body is None else json.dumps(body).encode("utf-8")
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            "Accept: text/event-stream, application/json\r\n")
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    writer.write(head.encode("latin-1") + b"\r\n" + payload)
    await writer.drain()
    status_line = await reader.readline()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        writer.close()
        raise HTTPError(f"bad status line {status_line[:80]!r}")
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return reader, writer, int(parts[1]), headers


async def body_chunks(reader: asyncio.StreamReader, headers: dict) -> AsyncIterator[bytes]:
    """The response body as it arrives: de-chunked (``Transfer-Encoding: chunked``, what
    streaming responses use), ``Content-Length`` bytes, or everything up to the end."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise HTTPError("connection closed inside a chunked body")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HTTPError(f"bad chunk size line {size_line[:40]!r}") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)  # the CRLF after each chunk
            yield data
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def request_json(host: str, port: int, method: str, path: str, body: Optional[dict] = None) -> tuple:
    """``(status, decoded JSON or the text)`` of a whole (non-streamed) response."""
    reader, writer, status, headers = await send_request(host, port, method, path, body)
    try:
        raw = b"".join([c async for c in body_chunks(reader, headers)])
    finally:
        writer.close()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def _take_event(result: RequestResult, event: dict, now: float) -> None:
    """Record one ``chat.completion.chunk`` (or ``text_completion`` chunk) that arrived at ``now``."""
    if "error" in event:
        result.error = f"error event: {json.dumps(event['error'])[:200]}"
        return
    usage = event.get("usage")
    if usage and usage.get("completion_tokens") is not None:
        result.usage_tokens = int(usage["completion_tokens"])
    for choice in event.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
        if piece:
            if result.first is None:
                result.first = now
            result.chunk_times.append(now)
            result.pieces.append(piece)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]


async def stream_request(host: str, port: int, path: str, body: dict, sink: list, clock=time.perf_counter) -> None:
    """Send one streaming request; its ``RequestResult`` is appended to ``sink`` before it is
    sent, so that one cut by cancellation is still counted (its ``error`` says so).  Any failure
    becomes the result's ``error``: a level never loses a request."""
    result = RequestResult(start=clock())
    sink.append(result)
    writer = None
    try:
        reader, writer, status, headers = await send_request(host, port, "POST", path, body)
        if status != 200:
            raw = b"".join([c async for c in body_chunks(reader, headers)])
            result.error = f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"
            return
        parser = SSEParser()
        async for chunk in body_chunks(reader, headers):
            now = clock()
            for data in parser.feed(chunk):
                if data.strip() == "[DONE]":
                    result.end = now
                    break
                _take_event(result, json.loads(data), now)
            if result.end is not None or result.error is not None:
                break
        if result.end is None and result.error is None:
            result.error = "stream ended without data: [DONE]"
    except asyncio.CancelledError:
        result.error = "cut by the level's time cap"
        raise
    except Exception as exc:  # a broken connection or stream: counted, never raised
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if writer is not None:
            writer.close()


async def run_level(host: str, port: int, path: str, body: dict, concurrency: int, total: int,
                    time_cap: float, clock=time.perf_counter) -> tuple[list, float]:
    """``concurrency`` clients in a closed loop until ``total`` requests are sent, or
    ``time_cap`` seconds: ``(results in the order sent, wall seconds)``."""
    results: list = []
    remaining = total

    async def client():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await stream_request(host, port, path, body, results, clock)

    start = clock()
    tasks = [asyncio.create_task(client()) for _ in range(min(concurrency, total))]
    _, pending = await asyncio.wait(tasks, timeout=time_cap)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return results, clock() - start


# ---------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------


class ServerError(RuntimeError):
    """A server that did not start or answer; the message ends with its log's tail."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(server: str, python: str, gguf: str, threads: int, port: int, max_batch: int) -> list:
    """The command line that starts ``server`` on ``HOST:port``."""
    if server == "fasttx":
        return [python, "-m", "fasttx", "serve", "--model", gguf, "--host", HOST, "--port", str(port),
                "--threads", str(threads), "--max-batch", str(max_batch)]
    return [python, "-m", "llama_cpp.server", "--model", gguf, "--host", HOST, "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(LLAMA_N_CTX),
            "--interrupt_requests", "False", "--verbose", "False"]


def server_env(server: str) -> dict:
    """fasttx's server imports the fasttx package of this harness (``worker_env``), and requires
    no key (``$FASTTX_API_KEY`` would make it answer the benchmark's requests 401); the
    reference's gets this environment as it is."""
    if server != "fasttx":
        return dict(os.environ)
    env = worker_env()
    env.pop("FASTTX_API_KEY", None)
    return env


# Run in a server's interpreter: which of its modules are missing, and its packages' versions.
_PROBE = """
import importlib.metadata, importlib.util, json, platform, sys
modules, dists = json.loads(sys.argv[1])
def found(m):
    try:
        return importlib.util.find_spec(m) is not None
    except (ImportError, ValueError):
        return False
versions = {}
for d in dists:
    try:
        versions[d] = importlib.metadata.version(d)
    except importlib.metadata.PackageNotFoundError:
        pass
print(json.dumps({"missing": [m for m in modules if not found(m)], "versions": versions,
                  "python": platform.python_version()}))
"""


def probe(server: str, python: str) -> dict:
    """``{"missing": [...], "versions": {...}, "python": "3.x"}`` of ``server``'s interpreter;
    ``{"error": why}`` when it cannot run."""
    try:
        done = subprocess.run([python, "-c", _PROBE, json.dumps([REQUIRES[server], DISTRIBUTIONS[server]])],
                              env=server_env(server), capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"cannot run {python}: {exc}"}
    if done.returncode != 0:
        return {"error": f"{python} failed: {done.stderr.strip()[-500:]}"}
    return json.loads(done.stdout)


class Server:
    """A server subprocess, its output in a log file; ``stop()`` ends it (and only it)."""

    def __init__(self, name: str, cmd: list, env: dict, log_dir: Path):
        self.name, self.cmd = name, cmd
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, port: int, timeout: float) -> dict:
        """Poll ``GET /v1/models`` until it answers 200; returns its JSON."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, models = asyncio.run(asyncio.wait_for(request_json(HOST, port, "GET", "/v1/models"), 10))
                if status == 200:
                    return models
            except (OSError, asyncio.TimeoutError, HTTPError, asyncio.IncompleteReadError):
                pass
            time.sleep(0.5)
        raise ServerError(f"{self.name} did not answer GET /v1/models within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def request_body(server: str, model_id: str, new_tokens: int, stream: bool = True) -> dict:
    """The same request for both servers (see the module docstring, point 3)."""
    body = {"model": model_id, "messages": MESSAGES, "max_tokens": new_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if server == "llama-cpp-python":
        body["repeat_penalty"] = 1.0  # its server's default is 1.1; the others apply none
    return body


def warm_up(server: str, port: int, model_id: str, new_tokens: int, timeout: float) -> dict:
    """One non-streaming request (what a request gives alone), then one streaming request."""
    body = request_body(server, model_id, new_tokens, stream=False)
    status, answer = asyncio.run(asyncio.wait_for(request_json(HOST, port, "POST", CHAT_PATH, body), timeout))
    if status != 200 or not isinstance(answer, dict):
        raise ServerError(f"{server}: the warm-up request answered HTTP {status}: {str(answer)[:300]}")
    choice = (answer.get("choices") or [{}])[0]
    usage = answer.get("usage") or {}
    out = {"text": (choice.get("message") or {}).get("content"), "finish_reason": choice.get("finish_reason"),
           "completion_tokens": usage.get("completion_tokens"), "prompt_tokens": usage.get("prompt_tokens")}
    sink: list = []
    asyncio.run(asyncio.wait_for(stream_request(HOST, port, CHAT_PATH, request_body(server, model_id, new_tokens),
                                                sink), timeout))
    streamed = sink[0]
    if streamed.error is not None:
        raise ServerError(f"{server}: the streaming warm-up request failed: {streamed.error}")
    out["streamed_text_equal"] = streamed.text == out["text"]
    out["streamed_usage_tokens"] = streamed.usage_tokens
    return out


def run_server(server: str, python: str, args, log_dir: Path) -> dict:
    """Start ``server``, warm it up, run every level, stop it: its part of the report."""
    port = free_port()
    cmd = server_command(server, python, str(args.gguf), args.threads, port, args.max_batch)
    entry: dict = {"command": cmd, "load_average_before": os.getloadavg()}
    print(f"--- {LABELS[server]}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    proc = Server(server, cmd, server_env(server), log_dir)
    try:
        models = proc.wait_ready(port, args.start_timeout)
        entry["start_s"] = time.monotonic() - started
        listed = (models.get("data") or [{}]) if isinstance(models, dict) else [{}]
        model_id = str(listed[0].get("id", "default"))
        entry["model_id"] = model_id
        entry["request_body"] = request_body(server, model_id, args.new_tokens)
        entry["warmup"] = warm = warm_up(server, port, model_id, args.new_tokens, args.level_timeout)
        print(f"  ready in {entry['start_s']:.1f} s; warm-up: {warm['completion_tokens']} completion tokens "
              f"(finish_reason {warm['finish_reason']}), prompt {warm['prompt_tokens']} tokens", flush=True)
        entry["levels"] = {}
        for c in args.concurrency:
            total = requests_per_level(c, args)
            results, wall = asyncio.run(run_level(HOST, port, CHAT_PATH, entry["request_body"], c, total,
                                                  args.level_timeout))
            level = summarize_level(results, wall, total, warm)
            level["concurrency"] = c
            level["raw"] = raw_timings(results, warm)
            entry["levels"][str(c)] = level
            print("  " + level_line(c, level), flush=True)
        if proc.proc.poll() is not None:
            entry["exited_during_run"] = proc.proc.returncode
    finally:
        proc.stop()
        entry["load_average_after"] = os.getloadavg()
        entry["log_tail"] = proc.log_tail(5)
    return entry


def raw_timings(results: Sequence[RequestResult], warmup: Optional[dict]) -> list:
    """Every request of a level for the JSON: seconds from the level's first send (``sent``),
    from its own send (``ttft``, ``end``, ``chunks``: each content chunk's arrival)."""
    t0 = min((r.start for r in results), default=0.0)

    def rel(t, base):
        return None if t is None else round(t - base, 5)

    return [{"sent": rel(r.start, t0), "ttft": rel(r.first, r.start), "end": rel(r.end, r.start),
             "chunks": [rel(t, r.start) for t in r.chunk_times], "usage_tokens": r.usage_tokens,
             "finish_reason": r.finish_reason, "error": r.error,
             "text_equal_to_warmup": None if not warmup else r.text == warmup.get("text")} for r in results]


def requests_per_level(concurrency: int, args) -> int:
    return max(args.requests_per_client * concurrency, args.min_requests)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _ms(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def level_line(c: int, level: dict) -> str:
    tps = level["throughput_tokens_per_s"]
    return (f"{c} client{'s' if c > 1 else ''}: {level['completed']}/{level['requests']} requests, "
            f"{level['completion_tokens']} tokens in {level['wall_s']:.1f} s = "
            f"{'–' if tps is None else f'{tps:.1f}'} tokens/s; TTFT p50/p99 {_ms(level['ttft_ms']['p50'])}/"
            f"{_ms(level['ttft_ms']['p99'])} ms; per token p50/p99 {_ms(level['tpot_ms']['p50'])}/"
            f"{_ms(level['tpot_ms']['p99'])} ms; errors {level['error_count']}"
            + ("" if level["texts_equal_to_warmup"] is None
               else f"; answers equal to the one alone {level['texts_equal_to_warmup']}/{level['completed']}"))


def comparison(servers: dict, concurrency: Sequence[int]) -> dict:
    """Per level: fasttx over llama-cpp-python, throughput and p99 TTFT (None where one is missing)."""
    out = {}
    for c in concurrency:
        a = ((servers.get("fasttx") or {}).get("levels") or {}).get(str(c))
        b = ((servers.get("llama-cpp-python") or {}).get("levels") or {}).get(str(c))
        if a is None or b is None:
            continue
        out[str(c)] = {"throughput_ratio": ratio(a["throughput_tokens_per_s"], b["throughput_tokens_per_s"]),
                       "p99_ttft_ratio": ratio(a["ttft_ms"]["p99"], b["ttft_ms"]["p99"])}
    return out


def target_verdict(servers: dict, compared: dict) -> dict:
    """The issue's target at ``TARGET_CLIENTS`` clients: ``met`` True/False, or None with why."""
    out = {"clients": TARGET_CLIENTS, "throughput_ratio_at_least": TARGET_RATIO, "p99_ttft_ratio_at_most": 1.0}
    c = compared.get(str(TARGET_CLIENTS))
    if c is None or c["throughput_ratio"] is None or c["p99_ttft_ratio"] is None:
        return {**out, "met": None, "why": f"both servers must run the {TARGET_CLIENTS}-client level"}
    errors = sum(servers[s]["levels"][str(TARGET_CLIENTS)]["error_count"] for s in SERVERS)
    met = c["throughput_ratio"] >= TARGET_RATIO and c["p99_ttft_ratio"] <= 1.0 and errors == 0
    why = (f"throughput {c['throughput_ratio']:.2f}x (target >= {TARGET_RATIO:g}x), p99 TTFT "
           f"{c['p99_ttft_ratio']:.2f}x of the reference's (target <= 1)" + (f", {errors} errors" if errors else ""))
    return {**out, "met": met, "why": why}


def markdown(report: dict) -> str:
    """One row per (level, server): its figures and, on fasttx's rows, the ratios."""
    head = ["clients", "server", "requests ok/sent", "completion tokens", "tokens/s", "TTFT p50 ms",
            "TTFT p99 ms", "per-token p50 ms", "per-token p99 ms", "errors", "tokens/s vs ref", "p99 TTFT vs ref"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in report["setup"]["concurrency"]:
        for s in SERVERS:
            level = ((report["servers"].get(s) or {}).get("levels") or {}).get(str(c))
            if level is None:
                continue
            cmp = report["comparison"].get(str(c)) if s == "fasttx" else None
            tps = level["throughput_tokens_per_s"]
            cells = [str(c), LABELS[s], f"{level['completed']}/{level['sent']}", str(level["completion_tokens"]),
                     "–" if tps is None else f"{tps:.1f}", _ms(level["ttft_ms"]["p50"]), _ms(level["ttft_ms"]["p99"]),
                     _ms(level["tpot_ms"]["p50"]), _ms(level["tpot_ms"]["p99"]), str(level["error_count"]),
                     "–" if cmp is None else format_ratio(cmp["throughput_ratio"]),
                     "–" if cmp is None else format_ratio(cmp["p99_ttft_ratio"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The benchmark for ``fasttx bench``
# ---------------------------------------------------------------------------


def report_path_replacements(args) -> list:
    """``report.path_replacements()`` plus the reference's environment (the directory above its
    interpreter's ``bin``), which may lie outside every directory those name."""
    reps = path_replacements()
    if "llama-cpp-python" in args.servers and args.llama_cpp_python != sys.executable:
        env_root = str(Path(args.llama_cpp_python).absolute().parent.parent)
        if env_root not in (os.sep, ""):
            reps = sorted([*reps, (env_root, "<llama-cpp-python env>")], key=lambda ps: -len(ps[0]))
    return reps


def parse_concurrency(value: str) -> list:
    """``"16,1,4"`` -> ``[1, 4, 16]``; ValueError on anything but positive integers."""
    levels = sorted({int(v) for v in value.split(",") if v.strip()})
    if not levels or levels[0] < 1:
        raise ValueError("give positive client counts, e.g. 1,4,16,64")
    return levels


class ServeBenchmark:
    """``fasttx bench serve``: the three entry points of ``fasttx.bench.cli``'s registry."""

    name = "serve"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None,
                       help="threads of both servers (default: physical cores)")
        p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                       help="comma-separated client counts, one level each (default %(default)s)")
        p.add_argument("--requests-per-client", type=int, default=2,
                       help="a level sends max(this x clients, --min-requests) requests (default %(default)s)")
        p.add_argument("--min-requests", type=int, default=8, help="see --requests-per-client (default %(default)s)")
        p.add_argument("--new-tokens", type=int, default=NEW_TOKENS,
                       help=f"max_tokens of every request (default {NEW_TOKENS}; change only for smoke tests)")
        p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
        p.add_argument("--llama-cpp-python", default=sys.executable, metavar="PYTHON",
                       help="the Python interpreter whose llama_cpp.server runs (with its [server] extras; "
                            "default: this one)")
        p.add_argument("--gguf", default=None, help="the GGUF file (default: fasttx's default model, SmolLM2 Q4_1)")
        p.add_argument("--max-batch", type=int, default=None,
                       help="fasttx serve --max-batch (default: the largest client count, at least 64)")
        p.add_argument("--level-timeout", type=float, default=600.0,
                       help="seconds a level may take; requests still running then are cut and counted as errors")
        p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server may take to start")
        p.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the raw numbers")

    def finish_args(self, args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
        args.benchmark = self.name
        if args.threads is None:
            args.threads = default_threads()
        if args.threads < 1:
            p.error("--threads must be >= 1")
        try:
            args.concurrency = parse_concurrency(args.concurrency)
        except ValueError as exc:
            p.error(f"--concurrency: {exc}")
        if args.requests_per_client < 1 or args.min_requests < 1 or args.new_tokens < 1:
            p.error("--requests-per-client, --min-requests and --new-tokens must be >= 1")
        if args.level_timeout <= 0 or args.start_timeout <= 0:
            p.error("--level-timeout and --start-timeout must be > 0")
        args.servers = [s for s in args.servers.split(",") if s]
        unknown = [s for s in args.servers if s not in SERVERS]
        if unknown or not args.servers:
            p.error(f"--servers: choose from {','.join(SERVERS)}")
        if args.max_batch is None:
            args.max_batch = max(64, *args.concurrency)
        if args.max_batch < 1:
            p.error("--max-batch must be >= 1")
        return args

    def run(self, args: argparse.Namespace) -> int:
        started = time.time()
        args.gguf = find_gguf(args.gguf)
        machine = machine_info()
        pythons = {"fasttx": sys.executable, "llama-cpp-python": args.llama_cpp_python}
        print(f"fasttx bench serve: {args.gguf.name}, {args.threads} threads per server, clients "
              f"{','.join(map(str, args.concurrency))}, max_tokens {args.new_tokens}, temperature 0\n"
              f"{describe(machine)}", flush=True)
        servers: dict = {}
        with tempfile.TemporaryDirectory(prefix="fasttx-bench-serve-") as log_dir:
            for server in args.servers:
                info = probe(server, pythons[server])
                if "error" in info or info["missing"]:
                    why = info.get("error") or "not installed: " + ", ".join(
                        f"import {m} failed" for m in info["missing"])
                    servers[server] = {"skipped": why}
                    print(f"  SKIP {LABELS[server]}: {why}", flush=True)
                    continue
                try:
                    servers[server] = {"python": info["python"], "versions": info["versions"],
                                       **run_server(server, pythons[server], args, Path(log_dir))}
                except ServerError as exc:
                    servers[server] = {"python": info["python"], "versions": info["versions"], "failed": str(exc)}
                    print(f"  FAILED {LABELS[server]}: {exc}", flush=True)
        compared = comparison(servers, args.concurrency)
        report = {
            "benchmark": self.name,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command_line(),
            "machine": machine,
            "model": {"gguf": args.gguf.name, "size_bytes": args.gguf.stat().st_size, "sha256": sha256(args.gguf)},
            "setup": {
                "messages": MESSAGES, "path": CHAT_PATH, "max_tokens": args.new_tokens, "temperature": 0,
                "threads": args.threads, "concurrency": args.concurrency, "max_batch": args.max_batch,
                "requests_per_level": {str(c): requests_per_level(c, args) for c in args.concurrency},
                "level_timeout_s": args.level_timeout,
                "client": "asyncio, one HTTP/1.1 connection per streamed request, closed loop of c clients",
                "metrics": {
                    "throughput": "completion tokens of the completed requests / the level's wall time",
                    "ttft": "request sent -> first chunk with content",
                    "per_token": "per request: ([DONE] - first content chunk) / (completion tokens - 1)",
                    "itl": "gaps between consecutive content chunks, all requests pooled",
                    "percentiles": "linear interpolation between sorted values (numpy's default)",
                },
                "notes": ["every request sends the same prompt; llama-cpp-python finds it in its context "
                          "(the previous request's tokens) and decodes only its last token again: its TTFT "
                          "holds no prefill after its first request; fasttx prefills every prompt"],
            },
            "servers": servers,
            "comparison": compared,
            "target": target_verdict(servers, compared),
            "wall_s": time.time() - started,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(scrub_paths(report, report_path_replacements(args)), indent=1) + "\n")
        print("\n" + markdown(report))
        target = report["target"]
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[target["met"]]
        print(f"\nTarget at {TARGET_CLIENTS} clients (fasttx >= {TARGET_RATIO:g}x llama-cpp-python's throughput, "
              f"p99 TTFT no worse): {verdict}" + (f" ({target['why']})" if target.get("why") else ""))
        print(f"raw numbers: {out}  (total {report['wall_s']:.0f} s)")
        failed = [s for s in args.servers if "failed" in servers.get(s, {})]
        return 1 if failed else 0


BENCHMARK = ServeBenchmark()
