"""``fasttx bench serve`` (servers under load): its statistics on hand-computed timings, its
HTTP/SSE reading on recorded streams, its load client against an in-process stub server with
known delays, and a whole run against two stub server processes (no llama.cpp, no real server)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from fasttx import bench
from fasttx.bench import serve_load
from fasttx.bench.serve_load import (RequestResult, SSEParser, body_chunks, completion_tokens, percentile,
                                     run_level, stream_request, summarize_level)

# ------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("values, q, expected", [
    ([1, 2, 3, 4], 50, 2.5),            # position 1.5: halfway between 2 and 3
    ([1, 2, 3, 4], 99, 3.97),           # position 2.97
    ([1, 2, 3, 4], 0, 1), ([1, 2, 3, 4], 100, 4),
    ([10, 0, 20], 50, 10),              # sorted first
    ([10, 0, 20], 99, 19.8),            # position 1.98: 10 + 0.98 * 10
    ([5.0], 99, 5.0),
])  # fmt: skip
def test_percentile_interpolates_linearly(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None


def test_summarize_level_on_known_timings():
    warmup = {"text": "abc", "completion_tokens": 3}
    # 5 tokens from the streamed usage: TTFT 0.5, per token (1.5 - 0.5) / 4 = 0.25, gaps 0.2 x 4.
    r1 = RequestResult(start=0.0, first=0.5, end=1.5, chunk_times=[0.5, 0.7, 0.9, 1.1, 1.3],
                       pieces=list("vwxyz"), usage_tokens=5, finish_reason="length")
    # No usage, the warm-up's text: its 3 tokens; TTFT 0.2, per token (2.2 - 1.2) / 2 = 0.5, gaps 0.5 x 2.
    r2 = RequestResult(start=1.0, first=1.2, end=2.2, chunk_times=[1.2, 1.7, 2.2], pieces=list("abc"),
                       finish_reason="stop")
    r3 = RequestResult(start=1.5, error="HTTP 503: full")
    level = summarize_level([r1, r2, r3], wall_s=2.5, sent_limit=4, warmup=warmup)
    assert (level["requests"], level["sent"], level["completed"]) == (4, 3, 2)
    assert level["errors"] == {"HTTP 503: full": 1, "not sent before the level's time cap": 1}
    assert level["error_count"] == 2
    assert level["completion_tokens"] == 8
    assert level["throughput_tokens_per_s"] == pytest.approx(8 / 2.5)
    assert level["token_counts_from"] == {"usage": 1, "warmup": 1}
    assert level["finish_reasons"] == {"length": 1, "stop": 1}
    assert (level["distinct_texts"], level["texts_equal_to_warmup"]) == (2, 1)
    assert level["ttft_ms"] == pytest.approx({"p50": 350.0, "p99": 200 + 300 * 0.99, "n": 2})
    assert level["tpot_ms"] == pytest.approx({"p50": 375.0, "p99": 250 + 250 * 0.99, "n": 2})
    # Gaps [0.2, 0.2, 0.2, 0.2, 0.5, 0.5]: p50 at position 2.5, p99 at 4.95.
    assert level["itl_ms"] == pytest.approx({"p50": 200.0, "p99": 500.0, "n": 6})
    assert level["e2e_ms"] == pytest.approx({"p50": 1350.0, "p99": 1200 + 300 * 0.99, "n": 2})


def test_completion_tokens_sources():
    warmup = {"text": "ab", "completion_tokens": 9}
    assert completion_tokens(RequestResult(0, usage_tokens=4, pieces=["ab"]), warmup) == (4, "usage")
    assert completion_tokens(RequestResult(0, pieces=["a", "b"], chunk_times=[1, 2]), warmup) == (9, "warmup")
    # Another text: the warm-up's count says nothing about it; its content chunks are counted.
    assert completion_tokens(RequestResult(0, pieces=["a", "c"], chunk_times=[1, 2]), warmup) == (2, "chunks")


def test_a_level_with_nothing_completed_has_no_throughput():
    level = summarize_level([RequestResult(0.0, error="x")], wall_s=1.0, sent_limit=1)
    assert level["throughput_tokens_per_s"] is None and level["ttft_ms"]["p50"] is None
    assert level["completion_tokens_per_request"] is None


# ------------------------------------------------------------------------- SSE and HTTP bodies

# As llama-cpp-python's server (sse-starlette) sends them: CRLF line ends, a ping comment.
LLAMA_STREAM = (
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]}\r\n\r\n'
    b": ping - 2026-12-06 07:00:00\r\n\r\n"
    b'data: {"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}]}\r\n\r\n'
    b'data: {"choices": [{"index": 0, "delta": {"content": " w\xc3\xb6rld"}, "finish_reason": null}]}\r\n\r\n'
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)
# As a plain StreamingResponse sends them: LF only, a usage chunk with no choices.
FASTTX_STREAM = (
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n'
    b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
    b"data: [DONE]\n\n"
)


def _events(stream: bytes, cuts) -> list:
    parser, out, last = SSEParser(), [], 0
    for cut in [*cuts, len(stream)]:
        out += parser.feed(stream[last:cut])
        last = cut
    return out


@pytest.mark.parametrize("stream, n", [(LLAMA_STREAM, 5), (FASTTX_STREAM, 5)])
def test_sse_events_do_not_depend_on_where_reads_split(stream, n):
    whole = _events(stream, [])
    assert len(whole) == n and whole[-1] == "[DONE]"
    assert json.loads(whole[0])["choices"][0]["delta"]["role"] == "assistant"
    for cut in range(1, len(stream)):  # every split point, CR / LF pairs and UTF-8 sequences included
        assert _events(stream, [cut]) == whole, cut
    assert _events(stream, range(1, len(stream))) == whole  # one byte per read


def test_sse_multiline_data_and_other_fields():
    events = SSEParser().feed(b"event: x\nid: 3\ndata: a\ndata:b\n\n: comment\n\ndata: c\r\rdata: tail")
    assert events == ["a\nb", "c"]  # the unfinished last event is not an event yet


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _collect(data: bytes, headers: dict) -> bytes:
    return b"".join([c async for c in body_chunks(_reader(data), headers)])


def test_body_chunks_decodes_chunked_transfer():
    body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\n"
    assert asyncio.run(_collect(body, {"transfer-encoding": "chunked"})) == b"hello world!"
    assert asyncio.run(_collect(b"abcdef", {"content-length": "4"})) == b"abcd"
    assert asyncio.run(_collect(b"abcdef", {})) == b"abcdef"


@pytest.mark.parametrize("body", [b"5\r\nhel", b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n"])
def test_body_chunks_rejects_a_broken_chunked_body(body):
    with pytest.raises((serve_load.HTTPError, asyncio.IncompleteReadError)):
        asyncio.run(_collect(body, {"transfer-encoding": "chunked"}))


# ------------------------------------------------------------------------- a stub server

# An OpenAI-style server in a few lines of asyncio: GET /v1/models; POST of a chat request answers
# TOKENS, streamed (a role chunk, FIRST_DELAY, then one content chunk every GAP seconds, a finish
# chunk, a usage chunk when asked and USAGE, [DONE]) or whole. SERIAL: one request at a time (as
# llama-cpp-python's server). /full answers 503; /broken closes the connection mid-stream.
STUB = r'''
import asyncio, json

TOKENS = ["Hello", ",", " world", "!", " Bye"]
FIRST_DELAY, GAP, USAGE, SERIAL = 0.05, 0.02, True, False
state = {"active": 0, "max_active": 0, "requests": 0}
_lock = None


def sse(obj):
    return ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\r\n\r\n").encode()


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def whole(status, obj):
    data = json.dumps(obj).encode()
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(), len(data), data)


async def stream(writer, path, body):
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(chunk(sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})))
    await writer.drain()
    await asyncio.sleep(FIRST_DELAY)
    for i, t in enumerate(TOKENS):
        if i:
            await asyncio.sleep(GAP)
        if path == "/broken" and i == 2:
            return
        writer.write(chunk(sse({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]})))
        await writer.drain()
    writer.write(chunk(sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})))
    if USAGE and (body.get("stream_options") or {}).get("include_usage"):
        writer.write(chunk(sse({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(TOKENS)}})))
    writer.write(chunk(sse("[DONE]")) + b"0\r\n\r\n")


async def handle(reader, writer):
    global _lock
    state["active"] += 1
    state["max_active"] = max(state["max_active"], state["active"])
    try:
        method, path, _ = (await reader.readline()).decode().split(" ", 2)
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads((await reader.readexactly(int(headers.get("content-length", 0)))) or b"{}")
        if path == "/v1/models":
            writer.write(whole("200 OK", {"object": "list", "data": [{"id": "stub-model"}]}))
        elif path == "/full":
            writer.write(whole("503 Service Unavailable", {"error": {"message": "full"}}))
        elif not body.get("stream"):
            writer.write(whole("200 OK", {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TOKENS)},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(TOKENS)}}))
        else:
            state["requests"] += 1
            _lock = _lock or asyncio.Lock()
            if SERIAL:
                async with _lock:
                    await stream(writer, path, body)
            else:
                await stream(writer, path, body)
        await writer.drain()
    finally:
        state["active"] -= 1
        writer.close()


async def main(port, ready=None):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    if ready is not None:
        ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()
'''


def _stub(**settings) -> dict:
    ns: dict = {}
    exec(STUB, ns)
    ns.update(settings)
    return ns


async def _against_stub(stub: dict, work):
    """Start ``stub`` on a free port in this loop, ``await work(port)``, stop it."""
    ready = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(stub["main"](0, ready))
    port = await ready
    try:
        return await work(port)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


BODY = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


def test_load_client_measures_the_known_delays():
    stub = _stub()
    first, gap, n = stub["FIRST_DELAY"], stub["GAP"], len(stub["TOKENS"])
    results, wall = asyncio.run(_against_stub(
        stub, lambda port: run_level("127.0.0.1", port, "/v1/chat/completions", BODY, 4, 8, 30.0)))
    assert stub["state"]["requests"] == 8 and stub["state"]["max_active"] == 4  # 4 clients, never more
    level = summarize_level(results, wall, 8, {"text": "Hello, world! Bye", "completion_tokens": n})
    assert level["error_count"] == 0 and level["completed"] == 8
    assert level["completion_tokens"] == 8 * n and level["token_counts_from"] == {"usage": 8}
    assert level["distinct_texts"] == 1 and level["texts_equal_to_warmup"] == 8
    # Sleeps are never shorter than asked: lower bounds are exact, upper ones leave room for a busy machine.
    per_request = first + (n - 1) * gap
    assert 2 * per_request <= wall < 2 * per_request + 2.0  # two rounds of four
    assert 1000 * first <= level["ttft_ms"]["p50"] <= level["ttft_ms"]["p99"] < 1000 * (first + 0.5)
    # [DONE] follows the last content chunk at once: per token = the gap.
    assert 1000 * gap * 0.95 <= level["tpot_ms"]["p50"] < 1000 * (gap + 0.1)
    assert 1000 * gap * 0.95 <= level["itl_ms"]["p50"] < 1000 * (gap + 0.1)
    assert level["throughput_tokens_per_s"] == pytest.approx(8 * n / wall)
    assert level["throughput_tokens_per_s"] <= 8 * n / (2 * per_request)


def test_load_client_counts_errors_and_the_time_cap():
    async def work(port):
        full = await run_level("127.0.0.1", port, "/full", BODY, 2, 3, 30.0)
        broken = await run_level("127.0.0.1", port, "/broken", BODY, 1, 1, 30.0)
        capped = await run_level("127.0.0.1", port, "/v1/chat/completions", BODY, 2, 6, 0.03)
        return full, broken, capped

    stub = _stub(FIRST_DELAY=0.2)
    (full, wall_full), (broken, _), (capped, wall_capped) = asyncio.run(_against_stub(stub, work))
    level = summarize_level(full, wall_full, 3)
    assert level["completed"] == 0 and level["error_count"] == 3
    assert list(level["errors"]) == ['HTTP 503: {"error": {"message": "full"}}']
    assert broken[0].error == "HTTPError: connection closed inside a chunked body"
    assert broken[0].pieces == ["Hello", ","]  # what came before the cut is kept
    level = summarize_level(capped, wall_capped, 6)
    assert level["errors"] == {"cut by the level's time cap": 2, "not sent before the level's time cap": 4}
    assert wall_capped < 1.0


def test_stream_request_reads_a_server_that_sends_no_usage():
    stub = _stub(USAGE=False)
    sink: list = []
    asyncio.run(_against_stub(stub, lambda port: stream_request("127.0.0.1", port, "/v1/chat/completions",
                                                                BODY, sink)))
    (r,) = sink
    assert r.error is None and r.usage_tokens is None and r.text == "Hello, world! Bye"
    assert r.finish_reason == "length" and len(r.chunk_times) == 5 and r.start < r.first <= r.end


# ------------------------------------------------------------------------- report and options


def _level(tps, p99):
    return {"throughput_tokens_per_s": tps, "ttft_ms": {"p50": p99 / 2, "p99": p99}, "error_count": 0}


def test_comparison_and_target():
    servers = {"fasttx": {"levels": {"1": _level(100, 50), "16": _level(900, 400)}},
               "llama-cpp-python": {"levels": {"1": _level(150, 40), "16": _level(200, 5000)}}}
    compared = serve_load.comparison(servers, [1, 16])
    assert compared["1"] == pytest.approx({"throughput_ratio": 100 / 150, "p99_ttft_ratio": 50 / 40})
    assert compared["16"] == pytest.approx({"throughput_ratio": 4.5, "p99_ttft_ratio": 0.08})
    assert serve_load.target_verdict(servers, compared)["met"] is True
    servers["fasttx"]["levels"]["16"] = _level(500, 400)  # 2.5x: not enough
    assert serve_load.target_verdict(servers, serve_load.comparison(servers, [1, 16]))["met"] is False
    servers["fasttx"]["levels"]["16"] = _level(900, 6000)  # p99 TTFT worse than the reference's
    assert serve_load.target_verdict(servers, serve_load.comparison(servers, [1, 16]))["met"] is False
    verdict = serve_load.target_verdict(servers, serve_load.comparison(servers, [1]))
    assert verdict["met"] is None and "16-client" in verdict["why"]


def test_serve_options():
    args = bench.parse_args(["serve", "--concurrency", "16,1,4", "--threads", "2"])
    assert (args.benchmark, args.concurrency, args.threads, args.max_batch) == ("serve", [1, 4, 16], 2, 64)
    assert args.servers == ["fasttx", "llama-cpp-python"]
    assert serve_load.requests_per_level(1, args) == 8 and serve_load.requests_per_level(16, args) == 32
    assert bench.parse_args(["serve", "--concurrency", "128"]).max_batch == 128
    assert "serve" not in [name for name, _ in bench.parse_args(["all", "--threads", "1"]).plan]


@pytest.mark.parametrize("argv", [["serve", "--concurrency", "0"], ["serve", "--concurrency", "x"],
                                  ["serve", "--servers", "vllm"], ["serve", "--threads", "0"],
                                  ["serve", "--min-requests", "0"], ["serve", "--level-timeout", "0"]])
def test_serve_rejects_bad_options(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_server_commands_give_both_the_same_threads():
    fasttx = serve_load.server_command("fasttx", "py", "m.gguf", 3, 9000, 64)
    assert fasttx == ["py", "-m", "fasttx", "serve", "--model", "m.gguf", "--host", "127.0.0.1", "--port", "9000",
                      "--threads", "3", "--max-batch", "64"]
    llama = serve_load.server_command("llama-cpp-python", "py", "m.gguf", 3, 9000, 64)
    assert llama[:3] == ["py", "-m", "llama_cpp.server"]
    for flag, value in [("--n_threads", "3"), ("--n_threads_batch", "3"), ("--interrupt_requests", "False"),
                        ("--host", "127.0.0.1"), ("--model", "m.gguf")]:
        assert llama[llama.index(flag) + 1] == value


def test_whole_run_against_stub_server_processes(tmp_path, monkeypatch, capsys):
    """Two stub processes stand in for the servers: the concurrent one as fasttx, a serial one
    without streamed usage as llama-cpp-python; the report, its ratios and its target verdict."""
    def command(server, python, gguf, threads, port, max_batch):
        settings = "FIRST_DELAY, GAP = 0.01, 0.005\n"
        if server == "llama-cpp-python":
            settings += "USAGE, SERIAL = False, True\n"
        return [sys.executable, "-c", STUB + settings + f"asyncio.run(main({port}))\n"]

    monkeypatch.setattr(serve_load, "server_command", command)
    monkeypatch.setattr(serve_load, "probe", lambda server, python: {"missing": [], "versions": {"x": "1"},
                                                                     "python": "3"})
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "serve.json"
    argv = ["serve", "--gguf", str(gguf), "--concurrency", "1,16", "--requests-per-client", "1",
            "--min-requests", "2", "--new-tokens", "5", "--threads", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["setup"]["requests_per_level"] == {"1": 2, "16": 16}
    for name in ("fasttx", "llama-cpp-python"):
        s = report["servers"][name]
        assert s["warmup"]["completion_tokens"] == 5 and s["warmup"]["streamed_text_equal"]
        for c, n in (("1", 2), ("16", 16)):
            level = s["levels"][c]
            assert (level["completed"], level["error_count"], level["completion_tokens"]) == (n, 0, 5 * n)
            assert len(level["raw"]) == n and all(len(r["chunks"]) == 5 for r in level["raw"])
    assert report["servers"]["fasttx"]["levels"]["16"]["token_counts_from"] == {"usage": 16}
    assert report["servers"]["llama-cpp-python"]["levels"]["16"]["token_counts_from"] == {"warmup": 16}
    ratios = report["comparison"]["16"]
    assert ratios["throughput_ratio"] > 1 and ratios["p99_ttft_ratio"] < 1  # concurrent beats serial
    assert report["target"]["met"] in (True, False) and report["target"]["why"]
    printed = capsys.readouterr().out
    assert "| 16 | fasttx serve |" in printed and "Target at 16 clients" in printed


def test_a_server_that_does_not_start_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serve_load, "server_command",
                        lambda *a: [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"])
    monkeypatch.setattr(serve_load, "probe", lambda server, python: {"missing": [], "versions": {}, "python": "3"})
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "serve.json"
    assert bench.main(["serve", "--gguf", str(gguf), "--servers", "fasttx", "--out", str(out)]) == 1
    failed = json.loads(out.read_text())["servers"]["fasttx"]["failed"]
    assert "exited with status 3" in failed and "no model here" in failed
    assert json.loads(out.read_text())["target"]["met"] is None


def test_a_server_whose_python_lacks_it_is_skipped(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "serve.json"
    argv = ["serve", "--gguf", str(gguf), "--servers", "llama-cpp-python", "--llama-cpp-python", sys.executable,
            "--out", str(out)]
    monkeypatch.setattr(serve_load, "REQUIRES", {**serve_load.REQUIRES, "llama-cpp-python": ("no_such_module_x",)})
    assert bench.main(argv) == 0
    assert json.loads(out.read_text())["servers"]["llama-cpp-python"] == {
        "skipped": "not installed: import no_such_module_x failed"}


def test_the_reference_interpreter_path_is_scrubbed():
    from argparse import Namespace

    from fasttx.bench.report import scrub_paths

    args = Namespace(servers=["fasttx", "llama-cpp-python"], llama_cpp_python="/opt/refenv/bin/python")
    reps = serve_load.report_path_replacements(args)
    assert scrub_paths(["/opt/refenv/bin/python", "-m", "llama_cpp.server"], reps) == [
        "<llama-cpp-python env>/bin/python", "-m", "llama_cpp.server"]
    args.llama_cpp_python = sys.executable  # this interpreter: report.path_replacements covers it
    assert serve_load.report_path_replacements(args) == serve_load.path_replacements()
