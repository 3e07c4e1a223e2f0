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
import shutil
import tempfile
import traceback
from pathlib import Path

from .benchmark import Benchmark
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


def workload_inputs(name: str, pool: list[list[int]]) -> list[list[int]]:
    batch, _ = WORKLOADS[name]
    return pool[:batch]


# ---------------------------------------------------------------------------
# Model preparation (parent process, cached on disk)
# ---------------------------------------------------------------------------


def _recipe_matches(model_dir: Path) -> bool:
    stamp = model_dir / "bench_recipe.json"
    return (
        (model_dir / "model.safetensors").is_file()
        and stamp.is_file()
        and json.loads(stamp.read_text()) == RECIPE
    )


def build_hf_model(model_dir: Path) -> None:
    """Build and save the random t5-small-shaped model unless a matching cache exists."""
    if _recipe_matches(model_dir):
        return
    try:
        import torch
        from transformers import T5Config, T5ForConditionalGeneration
    except ImportError as exc:
        raise SystemExit(
            f"fasttx bench t5: building the benchmark model in {model_dir} needs torch and "
            f"transformers ({exc}); install them (pip install torch transformers) or pass "
            "--model-dir with a model built earlier"
        ) from exc

    print(f"building random t5-small-shaped model in {model_dir} ...", flush=True)
    torch.manual_seed(MODEL_SEED)
    config = T5Config(decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval().to(torch.float32)
    # Build in a temporary sibling and rename: an interrupted run never leaves a
    # half-written directory that a later run would take for a valid cache.
    tmp = Path(tempfile.mkdtemp(prefix=model_dir.name + ".tmp", dir=model_dir.parent))
    model.save_pretrained(tmp)
    (tmp / "bench_recipe.json").write_text(json.dumps(RECIPE))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    tmp.rename(model_dir)


class _VocabOnlyTokenizer:
    """The part of a T5 tokenizer CTranslate2's converter reads.

    The benchmark model has no trained tokenizer (the runtimes get token ids), but the
    converter insists on one to name the vocabulary.  Synthetic names keep the id ->
    token mapping one-to-one; the special tokens keep T5's ids (pad 0, eos 1, unk 2).
    """

    pad_token, eos_token, unk_token = "<pad>", "</s>", "<unk>"

    def __init__(self, vocab_size: int):
        self.tokens = [self.pad_token, self.eos_token, self.unk_token]
        self.tokens += [f"tok{i}" for i in range(3, vocab_size)]

    def get_vocab(self) -> dict:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, ids):
        return self.tokens[ids] if isinstance(ids, int) else [self.tokens[i] for i in ids]


def convert_ct2(model_dir: Path, ct2_dir: Path) -> None:
    """Convert the HF directory to CTranslate2 (float32) unless already done."""
    stamp = ct2_dir / "bench_recipe.json"
    if (ct2_dir / "model.bin").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) == RECIPE:
            return
    import ctranslate2.converters
    from transformers import AutoConfig

    vocab_size = AutoConfig.from_pretrained(model_dir).vocab_size

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, *args, **kwargs):
            return _VocabOnlyTokenizer(vocab_size)

    print(f"converting to CTranslate2 float32 in {ct2_dir} ...", flush=True)
    # quantization=None keeps the stored dtype (float32).
    Converter(str(model_dir)).convert(str(ct2_dir), quantization=None, force=True)
    stamp.write_text(json.dumps(RECIPE))


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
    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        super().__init__(threads)
        from transformers import T5ForConditionalGeneration

        self.model = T5ForConditionalGeneration.from_pretrained(str(model_dir), dtype=self.torch.float32).eval()

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


class T5Benchmark(Benchmark):
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

    def add_model_arguments(self, p):
        p.add_argument("--model-dir", type=Path, default=Path(DEFAULT_MODEL_DIR).expanduser(),
                       help=f"where the random model is built once (default {DEFAULT_MODEL_DIR})")

    def finish_args(self, args, p):
        args.model_dir = Path(args.model_dir).expanduser().absolute()
        return super().finish_args(args, p)

    def prepare(self, args, runtimes, skipped):
        """Build / convert what the chosen runtimes need; returns the runnable runtimes."""
        args.model_dir.parent.mkdir(parents=True, exist_ok=True)
        build_hf_model(args.model_dir)
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
                    convert_ct2(args.model_dir, ct2_dir_for(args.model_dir))
                except Exception:
                    reason = "conversion failed:\n" + traceback.format_exc()
            if reason is not None:
                for r in ct2:
                    skipped[r] = reason
                    print(f"  SKIP {r}: {reason.strip().splitlines()[-1]}")
                    runtimes.remove(r)
        return runtimes

    def worker_args(self, args):
        return ["--model-dir", str(args.model_dir)]

    def model_path(self, args):
        return str(args.model_dir)

    def inputs(self, args):
        return make_inputs()

    def workload_inputs(self, workload, pool):
        return workload_inputs(workload, pool)

    def options(self, workload, new_tokens):
        return generation_options(WORKLOADS[workload][1], new_tokens)

    def report_fields(self, args, pool):
        return {
            # The model's name only: where it was built is this machine's business.
            "model": {"name": args.model_dir.name, "recipe": RECIPE},
            "setup": {
                "source_len": SOURCE_LEN, "new_tokens": args.new_tokens,
                "input_seed": INPUT_SEED, "repeats": args.repeats, "thread_counts": args.thread_counts,
                "workloads": {wl: {"batch": WORKLOADS[wl][0], "num_beams": WORKLOADS[wl][1]}
                              for wl in args.workloads},
                "schedule": "for each thread count: persistent worker per runtime; warm-up, then "
                            "round-robin per repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return f"{SOURCE_LEN} source tokens, {args.new_tokens} new tokens, {args.repeats} repeats"

    def runtime_class(self, runtime):
        return RUNTIME_CLASSES[runtime]

    def make_runtime(self, runtime, args):
        return RUNTIME_CLASSES[runtime](args.model_dir, ct2_dir_for(args.model_dir), args.threads)


BENCHMARK = T5Benchmark()
