"""W1, T5 generation: fasttx vs PyTorch transformers vs CTranslate2 on CPU.

Usage::

    fasttx bench t5 [--threads 2] [--repeats 5] [--out BENCHMARKS-t5.json]
    python benchmarks/bench_t5.py [same options]        # the same, kept for old commands

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
3. Each runtime lives in its own worker subprocess (``python -m fasttx.bench t5 --worker
   RUNTIME``), so that peak RSS is per runtime and no library state leaks between them.
   All workers are started (one after the other, so load times do not overlap) and stay
   alive; the parent then drives them round-robin: warm-up of every (workload, runtime),
   then for each repeat, for each workload, each runtime in turn (the starting runtime
   rotates per repeat).  Only one worker computes at any time; the others block on a pipe.
   Interleaving spreads machine noise (other jobs, thermal drift) evenly over the runtimes
   instead of penalising whichever ran during a noisy minute.
4. Metrics per (runtime, workload):
   - new tokens/s = returned new tokens over the whole batch / wall time of one
     generate call (encoder, all decoding steps and the runtime's own input/output
     handling included; for beam search only the returned best sequence counts, i.e.
     64 tokens, not 4 x 64).  Median and min-max over the repeats.
   - TTFT = wall time of the same call with max_new_tokens = min_new_tokens = 1
     (encoder + one decoder step), median over the repeats.  Streaming cannot be
     timed the same way in every runtime, so this proxy is used for all of them.
   - load s = time of the load call (fasttx.load / from_pretrained / Translator) with a
     warm page cache (the files were just built or read); import time is recorded
     separately in the JSON.
   - peak RSS = the worker's own high-water mark at exit (``VmHWM`` from
     /proc/self/status; ``ru_maxrss`` elsewhere): interpreter + imported libraries +
     model + generation buffers, i.e. what a user's process would hold.  Memory-mapped
     weight pages count once touched.
5. Checks, using the warm-up outputs: every runtime must return exactly 64 (resp. 1)
   new tokens per sequence; fasttx greedy batch-1 tokens must equal transformers'
   (a WARNING line is printed otherwise); agreement of every other (runtime, workload)
   with PyTorch is reported too.
6. Prints a markdown table, the machine and library versions, and writes every raw
   number to the ``--out`` JSON file and a bar chart next to it (``.png``, with matplotlib).
   The batch-1 workloads (greedy_b1, beam4_b1) also get "% of bandwidth": new tokens/s x
   weight bytes per decoding step / the memory read bandwidth measured at the start
   (``--bandwidth-mb``); PyTorch and CTranslate2 f32 use fasttx f32's bytes per step,
   CTranslate2 int8 fasttx int8's.

The worker protocol and the schedule are in ``fasttx.bench.harness``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import traceback
from pathlib import Path

from . import harness

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


class FasttxRuntime:
    dtype = "auto"

    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        import fasttx

        self.model = fasttx.load(str(model_dir), dtype=self.dtype, threads=threads)

    @staticmethod
    def versions() -> dict:
        import fasttx

        return {"fasttx": fasttx.__version__}

    def ready_info(self) -> dict:
        return {"decode_weight_bytes": harness.decode_weight_bytes(self.model)}

    def prepare(self, ids):
        import numpy as np

        return np.asarray(ids, dtype=np.int64)

    def generate(self, prepared, options):
        return self.model.generate_ids(prepared, **options)


class FasttxInt8Runtime(FasttxRuntime):
    """Per-output-channel int8 weights (``dtype="int8"``)."""

    dtype = "int8"


class PytorchRuntime:
    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        import torch
        from transformers import T5ForConditionalGeneration

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = T5ForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()

    @staticmethod
    def versions() -> dict:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def prepare(self, ids):
        input_ids = self.torch.tensor(ids, dtype=self.torch.long)
        return input_ids, self.torch.ones_like(input_ids)

    def generate(self, prepared, options):
        input_ids, attention_mask = prepared
        with self.torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **options
            )
        # Column 0 is the decoder start token, not a generated one.
        return out[:, 1:].tolist()


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
    "fasttx": FasttxRuntime,
    "fasttx-int8": FasttxInt8Runtime,
    "pytorch": PytorchRuntime,
    "ctranslate2": Ct2Runtime,
    "ctranslate2-int8": Ct2Int8Runtime,
}


# ---------------------------------------------------------------------------
# The benchmark for the harness
# ---------------------------------------------------------------------------


class T5Benchmark(harness.Benchmark):
    name = "t5"
    runtimes = RUNTIMES
    labels = RUNTIME_LABELS
    requires = REQUIRES
    packages = PACKAGES
    needs_fasttx = ("fasttx", "fasttx-int8")
    workloads = {wl: {"batch": b, "num_beams": nb} for wl, (b, nb) in WORKLOADS.items()}
    reference = "pytorch"
    ratio_columns = (("pytorch", "vs PyTorch"), ("ctranslate2", "vs CT2 f32"), ("ctranslate2-int8", "vs CT2 int8"))
    show_workload = True
    fasttx_dtypes = {"fasttx": FasttxRuntime.dtype, "fasttx-int8": FasttxInt8Runtime.dtype}
    # Same weight storage, same bytes per step: float32 -> fasttx f32, int8 -> fasttx int8.
    weight_counterparts = WEIGHT_COUNTERPARTS
    decode_rate = True
    bandwidth_note = ("T5 uses the decode tokens/s (the encoder and first step taken out); "
                      "beam4_b1 reads the weights once per step for its 4 beams")

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
        return ["--model-dir", str(args.model_dir), "--threads", str(args.threads)]

    def model_path(self, args):
        return str(args.model_dir)

    def inputs(self, args):
        return make_inputs()

    def workload_inputs(self, workload, pool):
        return workload_inputs(workload, pool)

    def options(self, workload, new_tokens):
        return generation_options(WORKLOADS[workload][1], new_tokens)

    def check_agreement(self, results, workloads, warnings):
        return harness.check_agreement(results, workloads, warnings, reference="pytorch",
                                       must_match="fasttx/greedy_b1")

    def report_fields(self, args, pool):
        return {
            "model": {"dir": str(args.model_dir), "recipe": RECIPE},
            "setup": {
                "source_len": SOURCE_LEN, "new_tokens": args.new_tokens,
                "input_seed": INPUT_SEED, "repeats": args.repeats, "threads": args.threads,
                "workloads": {wl: {"batch": WORKLOADS[wl][0], "num_beams": WORKLOADS[wl][1]}
                              for wl in args.workloads},
                "schedule": "persistent worker per runtime; warm-up, then round-robin per "
                            "repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return f"{SOURCE_LEN} source tokens, {args.new_tokens} new tokens, {args.repeats} repeats"

    def runtime_class(self, runtime):
        return RUNTIME_CLASSES[runtime]

    def make_runtime(self, runtime, args):
        return RUNTIME_CLASSES[runtime](args.model_dir, ct2_dir_for(args.model_dir), args.threads)


BENCHMARK = T5Benchmark()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads for every runtime (default: physical cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per (runtime, workload)")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the raw numbers")
    p.add_argument("--model-dir", type=Path, default=Path(DEFAULT_MODEL_DIR).expanduser(),
                   help=f"where the random model is built once (default {DEFAULT_MODEL_DIR})")
    p.add_argument("--runtimes", default=",".join(RUNTIMES),
                   help="comma-separated subset of " + ",".join(RUNTIMES))
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS,
                   help="new tokens per sequence (default 64; change only for smoke tests)")
    harness.add_report_arguments(p)
    p.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)


def finish_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
    """Normalise and check parsed arguments (``p.error`` on a bad one)."""
    args.model_dir = Path(args.model_dir).expanduser().absolute()
    harness.check_common_arguments(args, p, RUNTIMES, WORKLOADS)
    return args


def run(args: argparse.Namespace) -> int:
    if args.worker:
        harness.worker_main(BENCHMARK, args.worker, args)
        return 0
    return harness.run(BENCHMARK, args)
