"""T5 generation (t5-small shape): fasttx vs PyTorch transformers vs CTranslate2 on CPU.

Usage::

    fasttx bench t5 [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-t5.json]

What it does
------------
1. Builds once (cached in ``--model-dir``) a random-weight model with the shape of
   transformers' default ``T5Config()`` (= t5-small: d_model 512, 6+6 layers, 8 heads,
   d_ff 2048, vocab 32128, relu FFN, tied and rescaled head), seeded with
   ``torch.manual_seed(0)``, saved as float32 safetensors with ``save_pretrained``.
   The one non-default value is ``decoder_start_token_id=0`` (as in the real t5-small
   config): ``T5Config()`` leaves it unset and ``generate`` cannot run without it.
   When CTranslate2 is importable, the same directory is converted once (float32) into
   ``<model-dir>-ct2``.
2. Runs three workloads, all with 32 source tokens (fixed, seeded random ids in
   [3, 32000)) and exactly 64 new tokens (min = max = 64 in every runtime, so EOS can
   never end a sequence early): greedy batch 1, beam search (4 beams) batch 1, greedy
   batch 8 (8 different inputs).
3. Every runtime at every thread count, each in its own worker process, interleaved (see
   ``fasttx.bench.runner``).  Metrics per (runtime, workload, thread count):
   - new tokens/s = returned new tokens over the whole batch / wall time of one
     generate call (encoder, all decoding steps and the runtime's own input/output
     handling included; for beam search only the returned best sequence counts, i.e.
     64 tokens, not 4 x 64).  Median and min-max over the repeats.
   - TTFT = wall time of the same call with max_new_tokens = min_new_tokens = 1
     (encoder + one decoder step), median over the repeats.
   - decode tokens/s = (n - b) / (t_n - t_1): the encoder and the first step taken out.
   - load s (warm page cache; import time separately in the JSON), peak RSS of the worker.
4. Checks, using the warm-up outputs: every runtime must return exactly 64 (resp. 1)
   new tokens per sequence; fasttx greedy batch-1 tokens must equal transformers'
   (a WARNING line is printed otherwise); agreement of every other (runtime, workload)
   with PyTorch is reported too.
5. "% of bandwidth" for the batch-1 workloads (see ``fasttx.bench.bandwidth``); PyTorch and
   CTranslate2 f32 use fasttx f32's bytes per step, CTranslate2 int8 fasttx int8's.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from .random_model import RandomModelBenchmark, VocabOnlyTokenizer, convert_ct2_once
from .runtimes import FasttxRuntime, TorchRuntime

# ---------------------------------------------------------------------------
# Benchmark definition
# ---------------------------------------------------------------------------

SOURCE_LEN = 32
NEW_TOKENS = 64
INPUT_SEED = 1234
INPUT_ID_RANGE = (3, 32000)  # avoid pad (0), eos (1), unk (2) and the sentinel ids
MODEL_SEED = 0
# Bump when the model recipe changes so stale caches are rebuilt.
RECIPE = {"version": 1, "config": "T5Config(decoder_start_token_id=0)", "seed": MODEL_SEED}

WORKLOADS = {
    # name: (batch size, num_beams)
    "greedy_b1": (1, 1),
    "beam4_b1": (1, 4),
    "greedy_b8": (8, 1),
}
RUNTIMES = ("fasttx", "fasttx-int8", "pytorch", "ctranslate2", "ctranslate2-int8")
RUNTIME_LABELS = {
    "fasttx": "fasttx f32",
    "fasttx-int8": "fasttx int8",
    "pytorch": "PyTorch fp32",
    "ctranslate2": "CTranslate2 f32",
    "ctranslate2-int8": "CTranslate2 int8",
}
# Top-level modules each runtime imports (a missing one: the runtime is skipped).
REQUIRES = {
    "fasttx": ("fasttx._native", "numpy"),
    "fasttx-int8": ("fasttx._native", "numpy"),
    "pytorch": ("torch", "transformers"),
    "ctranslate2": ("ctranslate2",),
    "ctranslate2-int8": ("ctranslate2",),
}
# Top-level packages whose native libraries identify the build a runtime ran with.
PACKAGES = {
    "fasttx": ("fasttx",),
    "fasttx-int8": ("fasttx",),
    "pytorch": ("torch",),
    "ctranslate2": ("ctranslate2",),
    "ctranslate2-int8": ("ctranslate2",),
}
# Runtimes that are not fasttx -> the fasttx runtime whose weights are stored the same way (its
# bytes per decoding step stand for theirs in the "% of bandwidth" column).
WEIGHT_COUNTERPARTS = {"pytorch": "fasttx", "ctranslate2": "fasttx", "ctranslate2-int8": "fasttx-int8"}
DEFAULT_MODEL_DIR = "~/.cache/fasttx-bench/t5-small-random"
DEFAULT_OUT = "BENCHMARKS-t5.json"


def generation_options(num_beams: int, new_tokens: int) -> dict:
    """The options every runtime receives (transformers GenerationConfig names).

    All beam parameters are given explicitly so that no runtime default can differ;
    with min = max new tokens every hypothesis has the same length, so the length
    penalty cannot change the ranking either.
    """
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "num_beams": num_beams,
        "num_return_sequences": 1,
        "length_penalty": 1.0,
        "do_sample": False,
    }


def make_inputs() -> list[list[int]]:
    """Eight fixed source sequences; batch-1 workloads use the first one."""
    import numpy as np

    rng = np.random.default_rng(INPUT_SEED)
    ids = rng.integers(*INPUT_ID_RANGE, size=(8, SOURCE_LEN))
    return ids.tolist()


# ---------------------------------------------------------------------------
# Model preparation (parent process, cached on disk; see ``random_model``)
# ---------------------------------------------------------------------------


def make_model():
    """The random t5-small-shaped model (float32, seeded)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(MODEL_SEED)
    return T5ForConditionalGeneration(T5Config(decoder_start_token_id=0)).eval().to(torch.float32)


def vocab_tokenizer(vocab_size: int) -> VocabOnlyTokenizer:
    """CTranslate2's stand-in tokenizer: T5's special tokens at their ids (pad 0, eos 1, unk 2)."""
    return VocabOnlyTokenizer(vocab_size, {0: "<pad>", 1: "</s>", 2: "<unk>"}, {"pad": 0, "eos": 1, "unk": 2})


def ct2_dir_for(model_dir: Path) -> Path:
    return model_dir.with_name(model_dir.name + "-ct2")


# ---------------------------------------------------------------------------
# Runtimes (worker side).  Each: __init__ loads, generate() returns new tokens only.
# ---------------------------------------------------------------------------


class FasttxF32Runtime(FasttxRuntime):
    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        super().__init__(model_dir, threads, "auto")


class FasttxInt8Runtime(FasttxRuntime):
    """Per-output-channel int8 weights (``dtype="int8"``)."""

    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        super().__init__(model_dir, threads, "int8")


class PytorchRuntime(TorchRuntime):
    model_class = "T5ForConditionalGeneration"  # the transformers class that loads the directory

    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        super().__init__(threads)
        import transformers

        model_class = getattr(transformers, self.model_class)
        self.model = model_class.from_pretrained(str(model_dir), dtype=self.torch.float32).eval()

    def first_new_column(self, input_ids) -> int:
        return 1  # column 0 is the decoder start token, not a generated one


class Ct2Runtime:
    compute_type = "float32"

    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        import ctranslate2

        # inter_threads=1: one batch at a time, all `threads` working on it, like the
        # other runtimes.
        self.translator = ctranslate2.Translator(
            str(ct2_dir),
            device="cpu",
            compute_type=self.compute_type,
            intra_threads=threads,
            inter_threads=1,
        )
        # CTranslate2 speaks token strings: map ids through the converted vocabulary.
        self.vocab = json.loads((ct2_dir / "shared_vocabulary.json").read_text())
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}

    @staticmethod
    def versions() -> dict:
        import ctranslate2

        return {"ctranslate2": ctranslate2.__version__}

    def prepare(self, ids):
        return [[self.vocab[i] for i in row] for row in ids]

    def generate(self, prepared, options):
        n = options["max_new_tokens"]
        # Every option set explicitly: translate_batch's own defaults (beam_size=2,
        # max_decoding_length=256, min_decoding_length=1, ...) differ from
        # transformers'.  sampling_topk=1 is plain argmax (greedy / beam search).
        results = self.translator.translate_batch(
            prepared,
            max_batch_size=0,
            beam_size=options["num_beams"],
            patience=1,
            num_hypotheses=options["num_return_sequences"],
            length_penalty=options["length_penalty"],
            coverage_penalty=0,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            disable_unk=False,
            max_input_length=0,  # 0 = no truncation of the source
            max_decoding_length=n,
            min_decoding_length=options["min_new_tokens"],
            sampling_topk=1,
            sampling_temperature=1,
            return_scores=False,
            return_end_token=True,  # report an EOS if one were produced (it must not)
            use_vmap=False,
        )
        return [
            [self.token_to_id[t] for t in hyp] for r in results for hyp in r.hypotheses
        ]


class Ct2Int8Runtime(Ct2Runtime):
    """CTranslate2 quantizing the same float32 conversion to int8 at load."""

    compute_type = "int8"


RUNTIME_CLASSES = {
    "fasttx": FasttxF32Runtime,
    "fasttx-int8": FasttxInt8Runtime,
    "pytorch": PytorchRuntime,
    "ctranslate2": Ct2Runtime,
    "ctranslate2-int8": Ct2Int8Runtime,
}


# ---------------------------------------------------------------------------
# The benchmark for the harness
# ---------------------------------------------------------------------------


class T5Benchmark(RandomModelBenchmark):
    name = "t5"
    runtimes = RUNTIMES
    labels = RUNTIME_LABELS
    requires = REQUIRES
    packages = PACKAGES
    needs_fasttx = ("fasttx", "fasttx-int8")
    workloads = {wl: {"batch": b, "num_beams": nb} for wl, (b, nb) in WORKLOADS.items()}
    new_tokens = NEW_TOKENS
    default_out = DEFAULT_OUT
    must_match = "fasttx/greedy_b1"
    ratio_columns = (("pytorch", "vs PyTorch"), ("ctranslate2", "vs CT2 f32"), ("ctranslate2-int8", "vs CT2 int8"))
    show_workload = True
    fasttx_dtypes = {"fasttx": "auto", "fasttx-int8": "int8"}
    # Same weight storage, same bytes per step: float32 -> fasttx f32, int8 -> fasttx int8.
    weight_counterparts = WEIGHT_COUNTERPARTS
    bandwidth_note = ("T5 uses the decode tokens/s (the encoder and first step taken out); "
                      "beam4_b1 reads the weights once per step for its 4 beams")

    # What a benchmark of another encoder-decoder shape (``marian``) gives instead.
    recipe = RECIPE
    default_model_dir = DEFAULT_MODEL_DIR
    source_len = SOURCE_LEN
    input_seed = INPUT_SEED
    runtime_classes = RUNTIME_CLASSES

    def make_model(self):
        return make_model()

    def vocab_tokenizer(self, vocab_size):
        return vocab_tokenizer(vocab_size)

    def prepare(self, args, runtimes, skipped):
        """Build / convert what the chosen runtimes need; returns the runnable runtimes."""
        self.build(args)
        runtimes = list(runtimes)
        ct2 = [r for r in runtimes if r.startswith("ctranslate2")]
        if ct2:
            reason = None
            try:
                import ctranslate2  # noqa: F401
            except Exception as exc:  # ImportError, or a broken native library
                reason = f"import ctranslate2 failed: {exc!r}"
            else:
                try:
                    convert_ct2_once(args.model_dir, ct2_dir_for(args.model_dir), self.recipe,
                                     self.vocab_tokenizer)
                except Exception:
                    reason = "conversion failed:\n" + traceback.format_exc()
            if reason is not None:
                for r in ct2:
                    skipped[r] = reason
                    print(f"  SKIP {r}: {reason.strip().splitlines()[-1]}")
                    runtimes.remove(r)
        return runtimes

    def inputs(self, args):
        return make_inputs()

    def workload_inputs(self, workload, pool):
        return pool[: self.workloads[workload]["batch"]]

    def options(self, workload, new_tokens):
        return generation_options(self.workloads[workload]["num_beams"], new_tokens)

    def report_fields(self, args, pool):
        return {
            "model": self.model_field(args),
            "setup": {
                "source_len": self.source_len, "new_tokens": args.new_tokens,
                "input_seed": self.input_seed, "repeats": args.repeats, "thread_counts": args.thread_counts,
                "workloads": {wl: self.workloads[wl] for wl in args.workloads},
                "schedule": "for each thread count: persistent worker per runtime; warm-up, then "
                            "round-robin per repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return f"{self.source_len} source tokens, {args.new_tokens} new tokens, {args.repeats} repeats"

    def runtime_class(self, runtime):
        return self.runtime_classes[runtime]

    def make_runtime(self, runtime, args):
        return self.runtime_classes[runtime](args.model_dir, ct2_dir_for(args.model_dir), args.threads)


BENCHMARK = T5Benchmark()
