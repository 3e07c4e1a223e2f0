#!/usr/bin/env python3
"""T5 generation benchmark: fasttx vs PyTorch transformers vs CTranslate2 on CPU.

Usage::

    python benchmarks/bench_t5.py [--threads 2] [--repeats 5] [--out BENCHMARKS-t5.json]

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
3. Each runtime lives in its own worker subprocess (this script re-invoked with the
   hidden ``--worker RUNTIME`` flag), so that peak RSS is per runtime and no library
   state leaks between them.  All workers are started (one after the other, so load
   times do not overlap) and stay alive; the parent then drives them round-robin:
   warm-up of every (workload, runtime), then for each repeat, for each workload, each
   runtime in turn (the starting runtime rotates per repeat).  Only one worker computes
   at any time; the others block on a pipe.  Interleaving spreads machine noise (other
   jobs, thermal drift) evenly over the runtimes instead of penalising whichever ran
   during a noisy minute.
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
   number to the ``--out`` JSON file.

Worker protocol: JSON lines.  The parent writes one request per line to the worker's
stdin; the worker answers one line on a private copy of its original stdout (fd 1
itself is pointed at stderr, so stray prints from libraries cannot corrupt the
protocol).  Worker stderr goes to a log file that is shown when a worker fails.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

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
RUNTIMES = ("fasttx", "pytorch", "ctranslate2")
RUNTIME_LABELS = {
    "fasttx": "fasttx f32",
    "pytorch": "PyTorch fp32",
    "ctranslate2": "CTranslate2 f32",
}
# Pause after each timed call: idle OpenMP / rayon threads of the worker that just ran
# spin for a short while before sleeping; the pause keeps them off the next runtime's
# cores.
SETTLE_S = 0.25


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
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

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


# ---------------------------------------------------------------------------
# Runtimes (worker side).  Each: __init__ loads, generate() returns new tokens only.
# ---------------------------------------------------------------------------


class FasttxRuntime:
    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        import fasttx

        self.model = fasttx.load(str(model_dir), threads=threads)

    @staticmethod
    def versions() -> dict:
        import fasttx

        return {"fasttx": fasttx.__version__}

    def prepare(self, ids):
        import numpy as np

        return np.asarray(ids, dtype=np.int64)

    def generate(self, prepared, options):
        return self.model.generate_ids(prepared, **options)


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
    def __init__(self, model_dir: Path, ct2_dir: Path, threads: int):
        import ctranslate2

        # inter_threads=1: one batch at a time, all `threads` working on it, like the
        # other runtimes.
        self.translator = ctranslate2.Translator(
            str(ct2_dir),
            device="cpu",
            compute_type="float32",
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


RUNTIME_CLASSES = {
    "fasttx": FasttxRuntime,
    "pytorch": PytorchRuntime,
    "ctranslate2": Ct2Runtime,
}


# Top-level packages whose native libraries identify the build a runtime ran with.
PACKAGES = {"fasttx": ("fasttx",), "pytorch": ("torch",), "ctranslate2": ("ctranslate2",)}


def native_files(packages) -> dict:
    """Size and mtime of the compiled extension modules loaded from `packages`.

    Lets the parent notice a library being rebuilt in place during a run (the numbers
    would then mix two builds, and a running process may even crash).
    """
    files = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if name.split(".")[0] in packages and path.endswith((".so", ".pyd")):
            st = os.stat(path)
            files[path] = [st.st_size, st.st_mtime]
    return files


def changed_files(files: dict) -> list[str]:
    changed = []
    for path, (size, mtime) in files.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if [st.st_size, st.st_mtime] != [size, mtime]:
            changed.append(path)
    return changed


def peak_rss_kb() -> int:
    """Peak resident set size of this process in KiB.

    Linux's VmHWM belongs to the current address space, which execve() replaced, so it
    counts only this worker.  ru_maxrss would not do: it survives fork + exec and
    starts at the parent's own peak (the parent may have built the model with torch).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def worker_main(runtime: str, model_dir: Path, ct2_dir: Path, threads: int) -> None:
    """Serve generate requests for one runtime over stdin/stdout (JSON lines)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints now land in the log, not in the protocol
    faulthandler.enable()  # a native crash leaves a Python traceback in the log

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    cls = RUNTIME_CLASSES[runtime]
    try:
        t0 = time.perf_counter()
        versions = cls.versions()  # imports the libraries
        t1 = time.perf_counter()
        rt = cls(model_dir, ct2_dir, threads)
        t2 = time.perf_counter()
    except Exception:
        reply({"error": traceback.format_exc()})
        return
    reply({"import_s": t1 - t0, "load_s": t2 - t1, "versions": versions,
           "native_files": native_files(PACKAGES[runtime])})

    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "exit":
            reply({"maxrss_kb": peak_rss_kb()})
            return
        try:
            prepared = rt.prepare(req["input_ids"])
            t0 = time.perf_counter()
            seqs = rt.generate(prepared, req["options"])
            seconds = time.perf_counter() - t0
            reply({"seconds": seconds, "sequences": seqs})
        except Exception:
            reply({"error": traceback.format_exc()})


# ---------------------------------------------------------------------------
# Parent side: worker processes
# ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    """A running ``--worker RUNTIME`` subprocess."""

    def __init__(self, runtime: str, args, log_dir: Path):
        self.runtime = runtime
        self.log_path = log_dir / f"worker-{runtime}.log"
        self.log = open(self.log_path, "w")
        self.dead = False
        cmd = [
            sys.executable, os.path.abspath(__file__), "--worker", runtime,
            "--model-dir", str(args.model_dir), "--threads", str(args.threads),
        ]
        env = dict(os.environ)
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, env=env,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self._died()
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.runtime} worker failed:\n{msg['error']}")
        return msg

    def _log_tail(self, n: int = 30) -> str:
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _died(self):
        self.dead = True
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = "still running"
        raise WorkerError(
            f"{self.runtime} worker died (exit status {code}; negative = signal), "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def request(self, obj: dict) -> dict:
        if self.dead:
            raise WorkerError(f"{self.runtime} worker is dead")
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError: the worker exited or crashed
            self._died()
        return self._read()

    def generate(self, input_ids, options) -> dict:
        return self.request({"cmd": "generate", "input_ids": input_ids, "options": options})

    def close(self) -> dict:
        try:
            msg = self.request({"cmd": "exit"})
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=60)
            self.log.close()
        return msg


def start_workers(runtimes, args, log_dir: Path, skipped: dict) -> dict:
    """Start workers one at a time (so load times are not measured under contention)."""
    workers = {}
    for rt in runtimes:
        try:
            workers[rt] = Worker(rt, args, log_dir)
            print(f"  {rt}: loaded in {workers[rt].ready['load_s']:.2f} s", flush=True)
        except WorkerError as exc:
            skipped[rt] = str(exc)
            print(f"  SKIP {rt}: {str(exc).strip().splitlines()[-1]}", flush=True)
    return workers


# ---------------------------------------------------------------------------
# Measurement schedule
# ---------------------------------------------------------------------------


def expected_rows(workload: str) -> int:
    return WORKLOADS[workload][0]  # one returned sequence per input


def timed_call(worker: Worker, ids, num_beams: int, new_tokens: int) -> dict:
    """One generate call; returns seconds, sequences and the token count."""
    msg = worker.generate(ids, generation_options(num_beams, new_tokens))
    if "error" in msg:
        raise WorkerError(msg["error"])
    msg["tokens"] = sum(len(s) for s in msg["sequences"])
    time.sleep(SETTLE_S)
    return msg


def length_problems(workload: str, seqs, new_tokens: int) -> list[str]:
    problems = []
    if len(seqs) != expected_rows(workload):
        problems.append(f"{len(seqs)} sequences instead of {expected_rows(workload)}")
    lengths = sorted({len(s) for s in seqs})
    if lengths != [new_tokens]:
        problems.append(f"sequence lengths {lengths} instead of {new_tokens}")
    return problems


def run_schedule(workers: dict, workloads, pool, repeats: int, new_tokens: int,
                 results: dict, warnings: list):
    """Warm up, then time all (workload, runtime) pairs round-robin for each repeat."""
    runtimes = list(workers)

    def measure(rt, wl, new_tokens):
        try:
            return timed_call(workers[rt], workload_inputs(wl, pool), WORKLOADS[wl][1], new_tokens)
        except WorkerError as exc:
            results[rt][wl]["error"] = str(exc)
            print(f"  {rt} {wl} failed: {exc}", flush=True)
            warnings.append(f"{rt} {wl}: generate failed: {str(exc).strip().splitlines()[0]}")
            return None

    def active(rt, wl):
        return "error" not in results[rt][wl] and not workers[rt].dead

    print("warm-up ...", flush=True)
    for wl in workloads:
        for rt in runtimes:
            if not active(rt, wl):
                continue
            full = measure(rt, wl, new_tokens)
            first = measure(rt, wl, 1) if full else None
            if full and first:
                cell = results[rt][wl]
                cell["warmup_s"] = full["seconds"]
                cell["sequences"] = full["sequences"]
                for n, msg in ((new_tokens, full), (1, first)):
                    for p in length_problems(wl, msg["sequences"], n):
                        warnings.append(f"{rt} {wl} (max_new_tokens={n}): {p}")

    for r in range(repeats):
        # Rotate the runtime order so none is always first after a workload switch.
        order = runtimes[r % len(runtimes):] + runtimes[: r % len(runtimes)]
        for wl in workloads:
            for rt in order:
                if not active(rt, wl):
                    continue
                full = measure(rt, wl, new_tokens)
                first = measure(rt, wl, 1) if full else None
                if full and first:
                    cell = results[rt][wl]
                    cell["seconds"].append(full["seconds"])
                    cell["tokens"].append(full["tokens"])
                    cell["ttft_s"].append(first["seconds"])
        print(f"repeat {r + 1}/{repeats} done", flush=True)


# ---------------------------------------------------------------------------
# Checks and report
# ---------------------------------------------------------------------------


def check_agreement(results: dict, workloads, warnings: list) -> dict:
    """Compare each runtime's warm-up tokens with PyTorch's (the reference)."""
    agreement = {}
    ref = results.get("pytorch", {})
    for rt, cells in results.items():
        if rt == "pytorch":
            continue
        for wl in workloads:
            a, b = cells.get(wl, {}).get("sequences"), ref.get(wl, {}).get("sequences")
            if a is None or b is None:
                continue
            same = sum(x == y for x, y in zip(a, b))
            agreement[f"{rt}/{wl}"] = {"identical_sequences": same, "of": len(b)}
    if "fasttx/greedy_b1" in agreement:
        ok = agreement["fasttx/greedy_b1"]
        if ok["identical_sequences"] != ok["of"]:
            warnings.append("WARNING: fasttx greedy batch-1 tokens differ from transformers'")
    elif "fasttx" in results and "pytorch" in results:
        warnings.append("WARNING: fasttx vs transformers greedy batch-1 check could not run")
    return agreement


def summarize(cell: dict) -> dict | None:
    if not cell.get("seconds"):
        return None
    tps = [n / s for n, s in zip(cell["tokens"], cell["seconds"])]
    return {
        "tokens_per_s_median": statistics.median(tps),
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "ttft_ms_median": 1000 * statistics.median(cell["ttft_s"]),
        "ttft_ms_min": 1000 * min(cell["ttft_s"]),
        "ttft_ms_max": 1000 * max(cell["ttft_s"]),
    }


def markdown_table(report: dict) -> str:
    rows = [
        "| runtime | workload | new tokens/s median [min–max] | vs PyTorch | TTFT ms | load s | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    runtimes = report["runtimes"]
    for wl in report["workloads"]:
        ref = (runtimes.get("pytorch", {}).get("workloads", {}).get(wl) or {}).get("summary")
        for rt, info in runtimes.items():
            s = (info.get("workloads", {}).get(wl) or {}).get("summary")
            if s is None:
                continue
            rss = "–" if info["peak_rss_mb"] is None else f"{info['peak_rss_mb']:.0f}"
            ratio = (
                f"{s['tokens_per_s_median'] / ref['tokens_per_s_median']:.2f}×" if ref else "–"
            )
            rows.append(
                f"| {RUNTIME_LABELS[rt]} | {wl} "
                f"| {s['tokens_per_s_median']:.1f} [{s['tokens_per_s_min']:.1f}–{s['tokens_per_s_max']:.1f}] "
                f"| {ratio} | {s['ttft_ms_median']:.1f} | {info['load_s']:.2f} "
                f"| {rss} |"
            )
    return "\n".join(rows)


def machine_info(threads: int) -> dict:
    model, cores = None, set()
    physical_id = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key == "physical id":
                physical_id = value
            elif key == "core id":
                cores.add((physical_id, value))
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": len(cores) or None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def default_threads() -> int:
    return machine_info(0)["physical_cores"] or os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads for every runtime (default: physical cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per (runtime, workload)")
    p.add_argument("--out", default="BENCHMARKS-t5.json", help="JSON file for the raw numbers")
    p.add_argument("--model-dir", type=Path,
                   default=Path("~/.cache/fasttx-bench/t5-small-random").expanduser())
    p.add_argument("--runtimes", default=",".join(RUNTIMES),
                   help="comma-separated subset of " + ",".join(RUNTIMES))
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS,
                   help="new tokens per sequence (default 64; change only for smoke tests)")
    p.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.model_dir = args.model_dir.expanduser().absolute()
    args.threads = args.threads or default_threads()
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for r in args.runtimes:
        if r not in RUNTIMES:
            p.error(f"unknown runtime {r!r}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    return args


def ct2_dir_for(model_dir: Path) -> Path:
    return model_dir.with_name(model_dir.name + "-ct2")


def prepare_models(args, skipped: dict) -> list[str]:
    """Build / convert what the chosen runtimes need; returns the runnable runtimes."""
    args.model_dir.parent.mkdir(parents=True, exist_ok=True)
    build_hf_model(args.model_dir)
    runtimes = list(args.runtimes)
    if "ctranslate2" in runtimes:
        try:
            import ctranslate2  # noqa: F401
        except Exception as exc:  # ImportError, or a broken native library
            skipped["ctranslate2"] = f"import ctranslate2 failed: {exc!r}"
        else:
            try:
                convert_ct2(args.model_dir, ct2_dir_for(args.model_dir))
            except Exception:
                skipped["ctranslate2"] = "conversion failed:\n" + traceback.format_exc()
        if "ctranslate2" in skipped:
            print(f"  SKIP ctranslate2: {skipped['ctranslate2'].strip().splitlines()[-1]}")
            runtimes.remove("ctranslate2")
    return runtimes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.model_dir, ct2_dir_for(args.model_dir), args.threads)
        return 0

    started = time.time()
    machine = machine_info(args.threads)
    load_before = os.getloadavg()
    skipped: dict = {}
    warnings: list = []
    runtimes = prepare_models(args, skipped)
    pool = make_inputs()

    print(f"starting workers ({args.threads} threads) ...", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench_t5_logs_"))
    workers = start_workers(runtimes, args, log_dir, skipped)
    results = {
        rt: {wl: {"seconds": [], "tokens": [], "ttft_s": []} for wl in args.workloads}
        for rt in workers
    }
    report_runtimes = {}
    try:
        run_schedule(workers, args.workloads, pool, args.repeats, args.new_tokens,
                     results, warnings)
    finally:
        for rt, w in workers.items():
            try:
                rss_kb = w.close()["maxrss_kb"]
            except Exception as exc:  # report what we have even if a worker died
                warnings.append(f"{rt}: could not read peak RSS: {exc}")
                rss_kb = None
            report_runtimes[rt] = {
                "import_s": w.ready["import_s"],
                "load_s": w.ready["load_s"],
                "peak_rss_mb": None if rss_kb is None else rss_kb / 1024,
                "versions": w.ready["versions"],
                "native_files": w.ready.get("native_files", {}),
                "workloads": {},
            }
    for rt, w in workers.items():
        for path in changed_files(w.ready.get("native_files", {})):
            warnings.append(f"WARNING: {path} changed during the run ({rt} numbers may "
                            "mix two builds); rerun")
    agreement = check_agreement(results, args.workloads, warnings)
    for rt, cells in results.items():
        for wl, cell in cells.items():
            cell["summary"] = summarize(cell)
            report_runtimes[rt]["workloads"][wl] = cell

    versions = {"python": platform.python_version()}
    for info in report_runtimes.values():
        versions.update(info["versions"])
    report = {
        "benchmark": "t5",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": machine,
        "load_average_before_after": [load_before, os.getloadavg()],
        "versions": versions,
        "model": {"dir": str(args.model_dir), "recipe": RECIPE},
        "setup": {
            "source_len": SOURCE_LEN, "new_tokens": args.new_tokens, "input_seed": INPUT_SEED,
            "repeats": args.repeats, "threads": args.threads,
            "workloads": {wl: {"batch": WORKLOADS[wl][0], "num_beams": WORKLOADS[wl][1]}
                          for wl in args.workloads},
            "schedule": "persistent worker per runtime; warm-up, then round-robin per "
                        "repeat and workload with rotating runtime order",
        },
        "workloads": args.workloads,
        "runtimes": report_runtimes,
        "agreement_with_pytorch": agreement,
        "skipped": skipped,
        "warnings": warnings,
        "wall_s": time.time() - started,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")

    print()
    print(f"Machine: {machine['cpu']}, {machine['physical_cores']} physical cores / "
          f"{machine['logical_cpus']} logical CPUs, {args.threads} threads per runtime")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"Load average before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"{SOURCE_LEN} source tokens, {args.new_tokens} new tokens, {args.repeats} repeats\n")
    print(markdown_table(report))
    print()
    for key, a in agreement.items():
        print(f"agreement with PyTorch {key}: {a['identical_sequences']}/{a['of']} sequences identical")
    for rt, reason in skipped.items():
        print(f"skipped {rt}: {reason.strip().splitlines()[-1]}")
    for w in warnings:
        print(w)
    print(f"raw numbers: {args.out}  (total {report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
