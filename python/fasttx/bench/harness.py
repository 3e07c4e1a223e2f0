"""The benchmark harness shared by every ``fasttx bench`` workload.

Nothing here imports a runtime library (torch, transformers, ctranslate2, llama_cpp, not even
fasttx's native module) at import time: those are imported inside the worker subprocesses only,
so the package imports anywhere and a runtime that is not installed is simply reported as
skipped.  The parent imports fasttx's native module only when a run needs it (the memory
bandwidth probe, and reading a fasttx model's weight bytes per step), and goes on without
those figures if it cannot.

How a benchmark runs (the rules are in BENCHMARKS.md, "Common rules"):

1. Each runtime lives in its own worker subprocess (``python -m fasttx.bench BENCH --worker
   RUNTIME ...``), so that peak RSS is per runtime and no library state leaks between them.  All
   workers are started one after the other (so load times do not overlap) and stay alive; the
   parent then drives them round-robin: warm-up of every (workload, runtime), then for each
   repeat, for each workload, each runtime in turn (the starting runtime rotates per repeat).
   Only one worker computes at any time; the others block on a pipe.  Interleaving spreads
   machine noise (other jobs, thermal drift) evenly over the runtimes instead of penalising
   whichever ran during a noisy minute.
2. Every timed call is made twice: with the workload's number of new tokens (tokens/s) and with
   one new token (the time-to-first-token proxy: prompt processing plus one step).
3. Peak RSS is the worker's own high-water mark at exit (``VmHWM``).

Worker protocol: JSON lines.  The parent writes one request per line to the worker's stdin; the
worker answers one line on a private copy of its original stdout (fd 1 itself is pointed at
stderr, so stray prints from libraries cannot corrupt the protocol).  Worker stderr goes to a log
file that is shown when a worker fails.

Requests: ``{"cmd": "generate", "input_ids": [[...]], "options": {...}}`` answered by
``{"seconds": s, "sequences": [[new tokens], ...]}`` (or ``{"error": traceback}``), and
``{"cmd": "exit"}`` answered by ``{"maxrss_kb": n}``.  The first line a worker writes is its ready
message: ``{"import_s", "load_s", "versions", "native_files", ...}`` or ``{"error": traceback}``;
fasttx workers add ``decode_weight_bytes`` (the weights one batch-1 step streams).

Besides the tokens/s table, a run measures the machine's memory read bandwidth (in the parent,
before the workers start), shows each batch-1 result as a percentage of that bandwidth ceiling
(``percent_of_bandwidth``) and draws a bar chart next to the JSON (``write_chart``, when
matplotlib is installed).
"""

from __future__ import annotations

import datetime
import faulthandler
import importlib.util
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
from typing import Callable, Optional, Sequence

# Pause after each timed call: idle OpenMP / rayon threads of the worker that just ran spin for
# a short while before sleeping; the pause keeps them off the next runtime's cores.
SETTLE_S = 0.25

# The directory that holds the ``fasttx`` package this harness belongs to: workers import the
# very same copy (it is put first on their PYTHONPATH).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent

# Worker bootstrap for runtimes other than fasttx: makes ``fasttx.bench`` importable without
# running ``fasttx/__init__.py`` (which loads fasttx's native library, numpy and tokenizers), so
# that a PyTorch or llama.cpp worker holds nothing of fasttx: its peak RSS is its own runtime's.
_STUB_PREAMBLE = (
    "import sys, types\n"
    "pkg = types.ModuleType('fasttx')\n"
    "pkg.__path__ = [sys.argv[1]]\n"
    "pkg.__bench_stub__ = True\n"
    "sys.modules['fasttx'] = pkg\n"
    "del sys.argv[1]\n"
)
_STUB_BOOTSTRAP = _STUB_PREAMBLE + "from fasttx.bench import main\nsys.exit(main(sys.argv[1:]))\n"


class WorkerError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Benchmark description (one subclass per workload module)
# ---------------------------------------------------------------------------


class Benchmark:
    """What a workload module defines; the harness does the rest.

    Class attributes:
      name: the ``fasttx bench NAME`` word and the JSON ``benchmark`` field.
      runtimes: runtime names in their default order.
      labels: runtime -> display name in the table.
      requires: runtime -> top-level modules it needs (checked with ``find_spec`` before a
        worker is started, so a runtime that is not installed is skipped with that reason).
      packages: runtime -> top-level packages whose native libraries identify its build.
      needs_fasttx: runtimes whose worker must import the real ``fasttx`` package.
      workloads: workload name -> dict (at least ``batch``).
      reference: the runtime the others are compared with (tokens and speed).
      ratio_columns: (runtime, header) pairs: a "median tokens/s / that runtime's" column each.
      show_workload: whether the table has a workload column.
      decode_rate: whether summaries include the derived decode rate (see ``summarize``).
      fasttx_dtypes: fasttx runtime -> the ``dtype`` it loads with; its worker reports the bytes
        of weights a batch-1 step streams (``decode_weight_bytes``).
      weight_counterparts: other runtime -> the fasttx runtime with the same weight storage,
        whose bytes per step stand for its own (see ``weight_bytes_per_runtime``).
      bandwidth_note: footnote printed under the table about the rate used for the
        "% of bandwidth" column.
    """

    name = ""
    runtimes: tuple = ()
    labels: dict = {}
    requires: dict = {}
    packages: dict = {}
    needs_fasttx: tuple = ()
    workloads: dict = {}
    reference = "pytorch"
    ratio_columns: tuple = (("pytorch", "vs PyTorch"),)
    show_workload = True
    decode_rate = False
    fasttx_dtypes: dict = {}
    weight_counterparts: dict = {}
    bandwidth_note = ""

    # --- parent side -----------------------------------------------------

    def prepare(self, args, runtimes: list, skipped: dict) -> list:
        """Build or locate the model files; returns the runtimes that can run."""
        return runtimes

    def worker_args(self, args) -> list:
        """Command-line flags that tell a worker where the model is."""
        return ["--threads", str(args.threads)]

    def inputs(self, args) -> object:
        """Input ids shared by all workloads (passed back to ``workload_inputs``)."""
        raise NotImplementedError

    def workload_inputs(self, workload: str, pool) -> list:
        raise NotImplementedError

    def options(self, workload: str, new_tokens: int) -> dict:
        raise NotImplementedError

    def expected_rows(self, workload: str) -> int:
        return self.workloads[workload]["batch"]

    def check_agreement(self, results: dict, workloads, warnings: list) -> dict:
        return check_agreement(results, workloads, warnings, reference=self.reference)

    def check_ready(self, workers: dict, pool, warnings: list) -> dict:
        """Extra checks on the workers' ready messages; returned dict goes into the report."""
        return {}

    def extra_checks(self, results: dict, workloads) -> dict:
        """Further comparisons of the warm-up outputs, saved under ``checks`` and printed."""
        return {}

    def report_fields(self, args, pool) -> dict:
        """``model`` and ``setup`` entries of the JSON report."""
        return {}

    def print_header(self, args) -> str:
        return ""

    def model_path(self, args) -> str:
        """What ``fasttx.load`` opens (for ``decode_weight_bytes`` read in the parent)."""
        raise NotImplementedError

    def batch1_workloads(self) -> list:
        """Workloads with one input row: the weights are read once per step for that row (beam
        search included: its beams share each read), so they get a "% of bandwidth" figure."""
        return [wl for wl, d in self.workloads.items() if d.get("batch") == 1]

    def table(self, report: dict) -> str:
        return markdown_table(
            report,
            self.labels,
            ratio_columns=self.ratio_columns,
            show_workload=self.show_workload,
            bandwidth_workloads=self.batch1_workloads(),
        )

    # --- worker side -----------------------------------------------------

    def runtime_class(self, runtime: str):
        raise NotImplementedError

    def make_runtime(self, runtime: str, args):
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------


def _mapped_libraries(directory: str) -> list[str]:
    """Shared libraries under ``directory`` mapped into this process (/proc/self/maps)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if path.startswith(directory) and ".so" in os.path.basename(path):
                        if path not in found:
                            found.append(path)
    except OSError:
        pass
    return found


def native_files(packages) -> dict:
    """Size and mtime of the compiled libraries loaded from ``packages``.

    Lets the parent notice a library being rebuilt in place during a run (the numbers would then
    mix two builds, and a running process may even crash).  Extension modules are found through
    ``sys.modules``; for a package without any (llama_cpp loads its library with ctypes), the
    shared libraries mapped from its directory are used instead.
    """
    files = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if name.split(".")[0] in packages and path.endswith((".so", ".pyd")):
            st = os.stat(path)
            files[path] = [st.st_size, st.st_mtime]
    for package in packages:
        if any(p for p in files if f"{os.sep}{package}{os.sep}" in p):
            continue
        mod = sys.modules.get(package)
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        for lib in _mapped_libraries(os.path.dirname(os.path.abspath(path)) + os.sep):
            try:
                st = os.stat(lib)
            except OSError:
                continue
            files[lib] = [st.st_size, st.st_mtime]
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

    Linux's VmHWM belongs to the current address space, which execve() replaced, so it counts
    only this worker.  ru_maxrss would not do: it survives fork + exec and starts at the parent's
    own peak (the parent may have built the model with torch).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def worker_main(bench: Benchmark, runtime: str, args) -> None:
    """Serve generate requests for one runtime over stdin/stdout (JSON lines)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints now land in the log, not in the protocol
    faulthandler.enable()  # a native crash leaves a Python traceback in the log

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        cls = bench.runtime_class(runtime)
        t0 = time.perf_counter()
        versions = cls.versions()  # imports the libraries
        t1 = time.perf_counter()
        rt = bench.make_runtime(runtime, args)
        t2 = time.perf_counter()
        ready = {"import_s": t1 - t0, "load_s": t2 - t1, "versions": versions,
                 "native_files": native_files(bench.packages.get(runtime, ()))}
        extra = getattr(rt, "ready_info", None)
        if extra is not None:
            ready.update(extra())  # after load_s: not part of the load time
    except Exception:
        reply({"error": traceback.format_exc()})
        return
    reply(ready)

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


def worker_command(bench: Benchmark, runtime: str, args) -> list[str]:
    """The command line of a worker: ``python -m fasttx.bench BENCH --worker RUNTIME ...``.

    Runtimes other than fasttx get the same entry point through a small bootstrap that does not
    import fasttx itself (see ``_STUB_BOOTSTRAP``).
    """
    rest = [bench.name, "--worker", runtime, *bench.worker_args(args)]
    if runtime in bench.needs_fasttx:
        return [sys.executable, "-m", "fasttx.bench", *rest]
    return [sys.executable, "-c", _STUB_BOOTSTRAP, str(PACKAGE_ROOT / "fasttx"), *rest]


def worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The workers import the fasttx package this harness belongs to.
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    return env


class Worker:
    """A running ``--worker RUNTIME`` subprocess."""

    def __init__(self, runtime: str, cmd: Sequence[str], log_dir: Path, env: Optional[dict] = None):
        self.runtime = runtime
        self.log_path = log_dir / f"worker-{runtime}.log"
        self.log = open(self.log_path, "w")
        self.dead = False
        self.proc = subprocess.Popen(
            list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, env=worker_env() if env is None else env,
        )
        try:
            self.ready = self._read()
        except WorkerError:
            self._shutdown()
            raise

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

    def _shutdown(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

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
            self._shutdown()
        return msg


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be found (not imported, just looked up)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def available_runtimes(bench: Benchmark, runtimes: Sequence[str], skipped: dict) -> list[str]:
    """``runtimes`` less those whose libraries are not installed (recorded in ``skipped``)."""
    keep = []
    for rt in runtimes:
        missing = missing_modules(bench.requires.get(rt, ()))
        if missing:
            skipped[rt] = "not installed: " + ", ".join(f"import {m} failed" for m in missing)
            print(f"  SKIP {rt}: {skipped[rt]}", flush=True)
        else:
            keep.append(rt)
    return keep


def start_workers(runtimes, make_cmd: Callable[[str], list], log_dir: Path, skipped: dict) -> dict:
    """Start workers one at a time (so load times are not measured under contention)."""
    workers = {}
    for rt in runtimes:
        try:
            workers[rt] = Worker(rt, make_cmd(rt), log_dir)
            print(f"  {rt}: loaded in {workers[rt].ready['load_s']:.2f} s", flush=True)
        except WorkerError as exc:
            skipped[rt] = str(exc)
            print(f"  SKIP {rt}: {str(exc).strip().splitlines()[-1]}", flush=True)
    return workers


# ---------------------------------------------------------------------------
# Measurement schedule
# ---------------------------------------------------------------------------


def rotated(runtimes: Sequence[str], repeat: int) -> list[str]:
    """The runtime order of repeat ``repeat``: the start rotates so none is always first."""
    runtimes = list(runtimes)
    if not runtimes:
        return []
    k = repeat % len(runtimes)
    return runtimes[k:] + runtimes[:k]


def length_problems(seqs, expected_rows: int, new_tokens: int) -> list[str]:
    problems = []
    if len(seqs) != expected_rows:
        problems.append(f"{len(seqs)} sequences instead of {expected_rows}")
    lengths = sorted({len(s) for s in seqs})
    if lengths != [new_tokens]:
        problems.append(f"sequence lengths {lengths} instead of {new_tokens}")
    return problems


def run_schedule(bench: Benchmark, workers: dict, workloads, pool, repeats: int, new_tokens: int,
                 results: dict, warnings: list, after_repeat: Optional[Callable[[], None]] = None):
    """Warm up, then time all (workload, runtime) pairs round-robin for each repeat;
    ``after_repeat()`` runs after each repeat (the bandwidth probe, while the workers idle)."""
    runtimes = list(workers)

    def timed_call(worker, wl, n):
        msg = worker.generate(bench.workload_inputs(wl, pool), bench.options(wl, n))
        if "error" in msg:
            raise WorkerError(msg["error"])
        msg["tokens"] = sum(len(s) for s in msg["sequences"])
        time.sleep(SETTLE_S)
        return msg

    def measure(rt, wl, n):
        try:
            return timed_call(workers[rt], wl, n)
        except WorkerError as exc:
            results[rt][wl]["error"] = str(exc)
            print(f"  {rt} {wl} failed: {exc}", flush=True)
            warnings.append(f"{rt} {wl}: generate failed: {str(exc).strip().splitlines()[0]}")
            return None

    def active(rt, wl):
        return "error" not in results[rt][wl] and not workers[rt].dead

    def measure_both(rt, wl):
        """The full call and the one-token call (time to first token), or None if either failed."""
        full = measure(rt, wl, new_tokens)
        first = measure(rt, wl, 1) if full else None
        return (full, first) if full and first else None

    print("warm-up ...", flush=True)
    for wl in workloads:
        for rt in runtimes:
            if not active(rt, wl):
                continue
            both = measure_both(rt, wl)
            if both:
                full, first = both
                cell = results[rt][wl]
                cell["warmup_s"] = full["seconds"]
                cell["sequences"] = full["sequences"]
                for n, msg in ((new_tokens, full), (1, first)):
                    for p in length_problems(msg["sequences"], bench.expected_rows(wl), n):
                        warnings.append(f"{rt} {wl} (max_new_tokens={n}): {p}")

    for r in range(repeats):
        for wl in workloads:
            for rt in rotated(runtimes, r):
                if not active(rt, wl):
                    continue
                both = measure_both(rt, wl)
                if both:
                    full, first = both
                    cell = results[rt][wl]
                    cell["seconds"].append(full["seconds"])
                    cell["tokens"].append(full["tokens"])
                    cell["ttft_s"].append(first["seconds"])
                    cell["first_tokens"].append(first["tokens"])
        if after_repeat is not None:
            after_repeat()
        print(f"repeat {r + 1}/{repeats} done", flush=True)


# ---------------------------------------------------------------------------
# Checks and report
# ---------------------------------------------------------------------------


def leading_matches(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens at the start of ``a`` and ``b`` are equal."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def check_agreement(results: dict, workloads, warnings: list, *, reference: str = "pytorch",
                    must_match: str = "fasttx/greedy_b1", leading: bool = False) -> dict:
    """Compare each runtime's warm-up tokens with the reference runtime's.

    ``must_match`` ("runtime/workload") must reproduce the reference exactly: a WARNING line is
    added otherwise.  ``leading``: also count the matching leading tokens of each sequence.
    """
    agreement = {}
    ref = results.get(reference, {})
    for rt, cells in results.items():
        if rt == reference:
            continue
        for wl in workloads:
            a, b = cells.get(wl, {}).get("sequences"), ref.get(wl, {}).get("sequences")
            if a is None or b is None:
                continue
            same = sum(x == y for x, y in zip(a, b))
            entry = {"identical_sequences": same, "of": len(b)}
            if leading:
                entry["matching_leading_tokens"] = [leading_matches(x, y) for x, y in zip(a, b)]
                entry["of_tokens"] = [len(y) for y in b]
            agreement[f"{rt}/{wl}"] = entry
    label = "transformers'" if reference == "pytorch" else reference + "'s"
    what = must_match.replace("/", " ")
    must_rt = must_match.split("/")[0]
    if must_match in agreement:
        ok = agreement[must_match]
        if ok["identical_sequences"] != ok["of"]:
            warnings.append(f"WARNING: {what} tokens differ from {label}")
    elif must_rt in results and reference in results:
        warnings.append(f"WARNING: {what} vs {label} check could not run")
    return agreement


def summarize(cell: dict, decode_rate: bool = False) -> Optional[dict]:
    """Median / min / max of the repeats of one (runtime, workload).

    tokens/s of each repeat = tokens / seconds; TTFT in ms.  With ``decode_rate``: also the decode
    rate (n - f) / (t_n - t_1) of each repeat, from the n-token call and the 1-token call (f
    tokens: one per row) of the same repeat, i.e. tokens/s with the prompt processing (and the
    encoder, for T5) taken out.
    """
    if not cell.get("seconds"):
        return None
    tps = [n / s for n, s in zip(cell["tokens"], cell["seconds"])]
    out = {
        "tokens_per_s_median": statistics.median(tps),
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "ttft_ms_median": 1000 * statistics.median(cell["ttft_s"]),
        "ttft_ms_min": 1000 * min(cell["ttft_s"]),
        "ttft_ms_max": 1000 * max(cell["ttft_s"]),
    }
    if decode_rate:
        # (JSON files written before "first_tokens" existed hold batch-1 runs: f = 1.)
        firsts = cell.get("first_tokens") or [1] * len(cell["tokens"])
        rates = [
            (n - f) / (s - t)
            for n, f, s, t in zip(cell["tokens"], firsts, cell["seconds"], cell["ttft_s"])
            if n > f and s > t
        ]
        out["decode_tokens_per_s_median"] = statistics.median(rates) if rates else None
    return out


def ratio(value: Optional[float], ref: Optional[float]) -> str:
    if value is None or not ref:
        return "–"
    return f"{value / ref:.2f}×"


def markdown_table(report: dict, labels: dict, *, ratio_columns=(("pytorch", "vs PyTorch"),),
                   show_workload: bool = True, agreement_column: Optional[str] = None,
                   bandwidth_workloads: Sequence[str] = ()) -> str:
    """The results table: one row per (workload, runtime) with a summary.

    ``ratio_columns``: (runtime, header) pairs; each adds "median tokens/s / that runtime's median
    for the same workload" ("–" when that runtime has no result).  ``agreement_column``: the
    reference runtime; adds a column "tokens = <reference>" with the matching leading tokens.
    ``bandwidth_workloads``: the workloads that get a "% of bandwidth" figure (see
    ``percent_of_bandwidth``); the column is there only when the report has a measured memory
    bandwidth (``machine.memory_read_gb_per_s``).
    """
    # A ratio column only for a runtime that took part in this run.
    ratio_columns = [(rt, h) for rt, h in ratio_columns if rt in report["runtimes"]]
    header = ["runtime"] + (["workload"] if show_workload else [])
    header += ["new tokens/s median [min–max]"] + [h for _, h in ratio_columns]
    decode = any(
        "decode_tokens_per_s_median" in ((w or {}).get("summary") or {})
        for info in report["runtimes"].values()
        for w in info.get("workloads", {}).values()
    )
    if decode:
        header.append("decode tokens/s")
    bandwidth = bool(memory_bandwidth_of(report))
    if bandwidth:
        header.append("% of bandwidth")
    header += ["TTFT ms", "load s", "peak RSS MB"]
    if agreement_column:
        header.append(f"tokens = {labels.get(agreement_column, agreement_column)}")
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    runtimes = report["runtimes"]
    agreement = report.get("agreement_with_pytorch", {})

    def summary(rt, wl):
        return (runtimes.get(rt, {}).get("workloads", {}).get(wl) or {}).get("summary")

    for wl in report["workloads"]:
        for rt, info in runtimes.items():
            s = summary(rt, wl)
            if s is None:
                continue
            rss = "–" if info.get("peak_rss_mb") is None else f"{info['peak_rss_mb']:.0f}"
            cells = [labels.get(rt, rt)] + ([wl] if show_workload else [])
            cells.append(
                f"{s['tokens_per_s_median']:.1f} "
                f"[{s['tokens_per_s_min']:.1f}–{s['tokens_per_s_max']:.1f}]"
            )
            for ref_rt, _ in ratio_columns:
                ref = summary(ref_rt, wl)
                cells.append(ratio(s["tokens_per_s_median"], ref and ref["tokens_per_s_median"]))
            if decode:
                d = s.get("decode_tokens_per_s_median")
                cells.append("–" if d is None else f"{d:.1f}")
            if bandwidth:
                pct = percent_of_bandwidth(report, rt, wl, bandwidth_workloads)
                cells.append("–" if pct is None else f"{pct:.0f}%")
            cells += [f"{s['ttft_ms_median']:.1f}", f"{info['load_s']:.2f}", rss]
            if agreement_column:
                a = agreement.get(f"{rt}/{wl}")
                if rt == agreement_column:
                    cells.append("(reference)")
                elif a is None:
                    cells.append("–")
                elif "matching_leading_tokens" in a:
                    cells.append(", ".join(
                        f"{m}/{n}" for m, n in zip(a["matching_leading_tokens"], a["of_tokens"])
                    ))
                else:
                    cells.append(f"{a['identical_sequences']}/{a['of']} sequences")
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------
# Memory bandwidth and bytes per token
# ---------------------------------------------------------------------------

# Size of the buffer the bandwidth measurement reads: larger than any cache, so the figure is the
# memory's (``--bandwidth-mb``; 0 skips the measurement).
BANDWIDTH_MB = 1536


def measure_memory_bandwidth(threads: int, megabytes: int = BANDWIDTH_MB) -> tuple[Optional[float], str]:
    """``(GB/s, "")`` from ``fasttx._native.memory_bandwidth(threads, megabytes)``, or
    ``(None, why not)`` when skipped (``megabytes`` 0) or not available in this build."""
    if megabytes <= 0:
        return None, "skipped (--bandwidth-mb 0)"
    try:
        from fasttx import _native
    except Exception as exc:  # ImportError, or a stub package without the native module
        return None, f"fasttx._native not available ({exc.__class__.__name__}: {exc})"
    fn = getattr(_native, "memory_bandwidth", None)
    if fn is None:
        return None, "this fasttx build has no memory_bandwidth (rebuild fasttx)"
    try:
        return float(fn(threads, megabytes)), ""
    except Exception as exc:
        return None, f"memory_bandwidth failed: {exc!r}"


def memory_bandwidth_of(report: dict) -> Optional[float]:
    """The report's measured memory read bandwidth in GB/s (None when not measured)."""
    return (report.get("machine") or {}).get("memory_read_gb_per_s") or None


def bandwidth_rate(summary: dict) -> tuple[Optional[float], str]:
    """The tokens/s a "% of bandwidth" figure uses, and which one it is: the decode rate when
    the summary has one (prefill taken out), else the whole call's tokens/s."""
    d = summary.get("decode_tokens_per_s_median")
    if d is not None:
        return d, "decode tokens/s"
    return summary.get("tokens_per_s_median"), "tokens/s"


def percent_of_bandwidth(report: dict, runtime: str, workload: str,
                         bandwidth_workloads: Sequence[str]) -> Optional[float]:
    """tokens/s x weight bytes per step / memory bandwidth, in percent.

    How much of the machine's memory read bandwidth the weight stream of one decoding step uses
    at the measured rate: 100% would be a runtime doing nothing but reading its weights from
    memory, once per step.  Only for ``bandwidth_workloads`` (batch 1: at larger batches the
    same bytes serve several rows and the figure would mean something else), and only when the
    bandwidth, the runtime's ``decode_weight_bytes`` and a summary are all known; else None.
    """
    bw = memory_bandwidth_of(report)
    if not bw or workload not in bandwidth_workloads:
        return None
    info = report.get("runtimes", {}).get(runtime) or {}
    nbytes = info.get("decode_weight_bytes")
    summary = (info.get("workloads", {}).get(workload) or {}).get("summary")
    if not nbytes or not summary:
        return None
    rate, _ = bandwidth_rate(summary)
    if rate is None:
        return None
    return rate * nbytes / (bw * 1e9) * 100


def bandwidth_percentages(report: dict, bandwidth_workloads: Sequence[str]) -> dict:
    """``{"runtime/workload": percent}`` for every figure ``percent_of_bandwidth`` can give."""
    out = {}
    for rt, info in report.get("runtimes", {}).items():
        for wl in info.get("workloads", {}):
            pct = percent_of_bandwidth(report, rt, wl, bandwidth_workloads)
            if pct is not None:
                out[f"{rt}/{wl}"] = pct
    return out


def weight_bytes_per_runtime(runtimes: Sequence[str], measured: dict, fasttx_runtimes,
                             counterparts: dict, load: Callable[[str], Optional[int]]) -> dict:
    """Weight bytes of one batch-1 step for each runtime of ``runtimes``.

    ``measured``: fasttx runtime -> ``decode_weight_bytes`` its worker reported (None if not).
    A fasttx runtime (in ``fasttx_runtimes``) has its own figure.  Another runtime gets the figure
    of its counterpart in ``counterparts`` (the fasttx runtime storing the weights the same way:
    float32, int8, Q4_1): the one measured in this run, else ``load(counterpart)`` (fasttx
    loaded in the parent just to read the number; called at most once per counterpart).
    Returns runtime -> ``{"bytes": int or None, "from": the fasttx runtime it comes from or None}``.
    """
    loaded: dict = {}
    out = {}
    for rt in runtimes:
        if rt in fasttx_runtimes:
            out[rt] = {"bytes": measured.get(rt), "from": rt}
            continue
        source = counterparts.get(rt)
        if source is None:
            out[rt] = {"bytes": None, "from": None}
            continue
        nbytes = measured.get(source)
        if nbytes is None:
            if source not in loaded:
                loaded[source] = load(source)
            nbytes = loaded[source]
        out[rt] = {"bytes": nbytes, "from": source}
    return out


def decode_weight_bytes(model) -> Optional[int]:
    """``model._native.decode_weight_bytes`` of a loaded fasttx model (None if this build lacks
    it); fasttx runtimes return it from ``ready_info``."""
    nbytes = getattr(getattr(model, "_native", None), "decode_weight_bytes", None)
    return None if nbytes is None else int(nbytes)


def load_weight_bytes(bench: "Benchmark", args, runtime: str) -> Optional[int]:
    """``decode_weight_bytes`` of fasttx runtime ``runtime``, loading fasttx in this process
    (None when fasttx or the property is not available)."""
    try:
        import fasttx

        print(f"  loading {runtime} to read its weight bytes per step ...", flush=True)
        model = fasttx.load(bench.model_path(args), dtype=bench.fasttx_dtypes[runtime], threads=1)
        nbytes = decode_weight_bytes(model)
        del model
    except Exception as exc:
        print(f"  could not read {runtime}'s weight bytes per step: {exc!r}", flush=True)
        return None
    return nbytes


def bandwidth_lines(report: dict, labels: dict, note: str = "") -> list[str]:
    """What is printed under the table: the measured bandwidth, each runtime's weight bytes per
    step and the footnote on the "% of bandwidth" column."""
    lines = []
    machine = report.get("machine") or {}
    bw = memory_bandwidth_of(report)
    if bw:
        probes = machine.get("memory_read_gb_per_s_probes") or []
        when = (f"; median of {len(probes)} probes, before the run and after each repeat: "
                + ", ".join(f"{p:.1f}" for p in probes)) if len(probes) > 1 else ""
        lines.append(f"Memory read bandwidth: {bw:.1f} GB/s ({machine.get('memory_bandwidth_mb')} MB "
                     f"buffer, {machine.get('threads')} threads, best of several reads{when})")
    else:
        why = machine.get("memory_bandwidth_skipped") or "not measured"
        lines.append(f"Memory read bandwidth: {why}; no % of bandwidth column")
    parts = []
    for rt, info in report.get("runtimes", {}).items():
        nbytes = info.get("decode_weight_bytes")
        label = labels.get(rt, rt)
        if nbytes is None:
            parts.append(f"{label} unknown")
            continue
        source = info.get("decode_weight_bytes_from")
        via = f" (as {labels.get(source, source)})" if source and source != rt else ""
        parts.append(f"{label} {nbytes / 1e6:.1f} MB{via}")
    if parts:
        lines.append("Weights read per batch-1 step: " + ", ".join(parts))
    if bw:
        lines.append("% of bandwidth = tokens/s x weight bytes per step / bandwidth, batch-1 "
                     "workloads only" + (f"; {note}" if note else ""))
    return lines


# ---------------------------------------------------------------------------
# Charts (optional: matplotlib)
# ---------------------------------------------------------------------------


def chart_path(out) -> Path:
    """The PNG next to a JSON report: same path, ``.png`` suffix."""
    return Path(out).with_suffix(".png")


def _figure():
    """A matplotlib Figure drawn by the Agg backend (no pyplot: no global backend, no display);
    ImportError when matplotlib is not installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def chart_title(report: dict) -> str:
    machine = report.get("machine") or {}
    date = str(report.get("date", ""))[:10]
    threads = machine.get("threads")
    what = f"fasttx bench {report.get('benchmark', '')}".strip()
    return f"{what}: {machine.get('cpu', '?')}, {threads} threads, {date}"


def write_chart(report: dict, path, labels: dict) -> tuple[Optional[Path], str]:
    """A grouped bar chart of ``report``: median new tokens/s per workload (groups) and runtime
    (bars), min–max over the repeats as error bars, written as PNG to ``path``.

    matplotlib is optional: returns ``(path, "")`` when written, ``(None, why not)`` otherwise
    (matplotlib missing, nothing to draw, or any failure: a chart never fails a benchmark).
    """
    try:
        fig = _figure()
    except ImportError as exc:
        return None, f"matplotlib is not installed ({exc})"
    try:
        runtimes = report.get("runtimes", {})
        workloads = [wl for wl in report.get("workloads", [])
                     if any(((info.get("workloads", {}).get(wl) or {}).get("summary"))
                            for info in runtimes.values())]
        names = [rt for rt, info in runtimes.items()
                 if any((info.get("workloads", {}).get(wl) or {}).get("summary") for wl in workloads)]
        if not workloads or not names:
            return None, "no results to draw"
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(names)
        for i, rt in enumerate(names):
            xs, heights, lo, hi = [], [], [], []
            for j, wl in enumerate(workloads):
                s = (runtimes[rt].get("workloads", {}).get(wl) or {}).get("summary")
                if not s:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(s["tokens_per_s_median"])
                lo.append(s["tokens_per_s_median"] - s["tokens_per_s_min"])
                hi.append(s["tokens_per_s_max"] - s["tokens_per_s_median"])
            bars = ax.bar(xs, heights, width, yerr=[lo, hi], capsize=3, label=labels.get(rt, rt))
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_ylabel("new tokens/s (median, min–max)")
        ax.set_title(chart_title(report), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, format="png")
    except Exception as exc:
        return None, f"chart failed: {exc!r}"
    return path, ""


def write_line_chart(series: dict, xs: Sequence, path, *, title: str, xlabel: str, ylabel: str,
                     labels: dict) -> tuple[Optional[Path], str]:
    """A line chart (one line per key of ``series``: {x: y}) as PNG; ``(path, "")`` or
    ``(None, why not)`` as ``write_chart``."""
    try:
        fig = _figure()
    except ImportError as exc:
        return None, f"matplotlib is not installed ({exc})"
    try:
        ax = fig.add_subplot(1, 1, 1)
        drawn = 0
        for name, values in series.items():
            pts = [(x, values[x]) for x in xs if values.get(x) is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=labels.get(name, name))
                drawn += 1
        if not drawn:
            return None, "no results to draw"
        ax.set_xticks(list(xs))
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, format="png")
    except Exception as exc:
        return None, f"chart failed: {exc!r}"
    return path, ""


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


def add_report_arguments(p) -> None:
    """``--bandwidth-mb`` and ``--no-chart``, shared by every benchmark's parser."""
    p.add_argument("--bandwidth-mb", type=int, default=BANDWIDTH_MB,
                   help=f"buffer size for the memory bandwidth measurement in MB (default "
                        f"{BANDWIDTH_MB}, larger than the caches); 0 skips it and the "
                        "%% of bandwidth column")
    p.add_argument("--no-chart", action="store_true",
                   help="do not write the PNG chart next to the JSON file")


def check_common_arguments(args, p, runtimes, workloads) -> None:
    """Normalise and check the arguments every benchmark shares (``p.error`` on a bad one):
    threads, the runtime and workload lists, repeats, new tokens, and the report options."""
    args.threads = args.threads or default_threads()
    args.workloads = split_list(args.workloads)
    for w in args.workloads:
        if w not in workloads:
            p.error(f"unknown workload {w!r} (choose from {', '.join(workloads)})")
    check_run_arguments(args, p, runtimes)


def check_run_arguments(args, p, runtimes) -> None:
    """The runtime list, repeats, new tokens and the report options (``p.error`` on a bad one)."""
    args.runtimes = split_list(args.runtimes)
    for r in args.runtimes:
        if r not in runtimes:
            p.error(f"unknown runtime {r!r} (choose from {', '.join(runtimes)})")
    if args.repeats < 0:
        p.error("--repeats must be >= 0")
    if args.new_tokens < 1:
        p.error("--new-tokens must be >= 1")
    check_report_arguments(args, p)


def check_report_arguments(args, p) -> None:
    if args.bandwidth_mb < 0:
        p.error("--bandwidth-mb must be >= 0")


def split_list(value) -> list[str]:
    """``"a,b,,c"`` -> ``["a", "b", "c"]`` (a list is returned as is)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [x for x in value.split(",") if x]


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """How this run was started, for the report (``fasttx bench ...``, ``python -m fasttx.bench
    ...`` or the script's path relative to the current directory)."""
    argv = list(sys.argv if argv is None else argv)
    first = argv[0] if argv else ""
    if first.endswith("__main__.py") and Path(first).parent.name == "bench":
        head = "python -m fasttx.bench"
    elif os.path.basename(first) == "fasttx":
        head = "fasttx"
    else:
        head = os.path.relpath(first) if first else "?"
    return " ".join([head] + argv[1:])


# ---------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------


def run(bench: Benchmark, args) -> int:
    """Run benchmark ``bench`` with parsed ``args`` (threads, repeats, out, runtimes,
    workloads, new_tokens, ...): prepare, measure, check, print and write the JSON report."""
    started = time.time()
    machine = machine_info(args.threads)
    load_before = os.getloadavg()
    skipped: dict = {}
    warnings: list = []
    runtimes = available_runtimes(bench, args.runtimes, skipped)
    runtimes = bench.prepare(args, runtimes, skipped)
    pool = bench.inputs(args)

    # The ceiling the batch-1 rates are compared with: measured before any worker exists and
    # again after every repeat (the workers idle then), the median taken, so that a machine
    # whose speed drifts during the run (shared VMs) is compared with what it delivered then.
    megabytes = getattr(args, "bandwidth_mb", BANDWIDTH_MB)
    if megabytes > 0:
        print(f"measuring memory read bandwidth ({megabytes} MB, {args.threads} threads) ...", flush=True)
    bandwidth, why_not = measure_memory_bandwidth(args.threads, megabytes)
    probes = [] if bandwidth is None else [bandwidth]

    def probe_again():
        if probes:
            again, _ = measure_memory_bandwidth(args.threads, megabytes)
            if again is not None:
                probes.append(again)
    machine["memory_read_gb_per_s"] = bandwidth
    machine["memory_bandwidth_mb"] = megabytes if bandwidth is not None else None
    if bandwidth is None:
        machine["memory_bandwidth_skipped"] = why_not
        print(f"  memory bandwidth: {why_not}", flush=True)
    else:
        print(f"  {bandwidth:.1f} GB/s", flush=True)

    print(f"starting workers ({args.threads} threads) ...", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench_{bench.name}_logs_"))
    workers = start_workers(runtimes, lambda rt: worker_command(bench, rt, args), log_dir, skipped)
    results = {
        rt: {wl: {"seconds": [], "tokens": [], "ttft_s": [], "first_tokens": []}
             for wl in args.workloads}
        for rt in workers
    }
    ready_checks = bench.check_ready(workers, pool, warnings)
    report_runtimes = {}
    try:
        run_schedule(bench, workers, args.workloads, pool, args.repeats, args.new_tokens,
                     results, warnings, after_repeat=probe_again)
        if probes:
            machine["memory_read_gb_per_s"] = statistics.median(probes)
            machine["memory_read_gb_per_s_probes"] = probes
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
                "decode_weight_bytes": w.ready.get("decode_weight_bytes"),
                "workloads": {},
            }
    for rt, w in workers.items():
        for path in changed_files(w.ready.get("native_files", {})):
            warnings.append(f"WARNING: {path} changed during the run ({rt} numbers may "
                            "mix two builds); rerun")
    agreement = bench.check_agreement(results, args.workloads, warnings)
    extra_checks = bench.extra_checks(results, args.workloads)
    ready_checks.update(extra_checks)
    for rt, cells in results.items():
        for wl, cell in cells.items():
            cell["summary"] = summarize(cell, decode_rate=bench.decode_rate)
            report_runtimes[rt]["workloads"][wl] = cell

    # Weight bytes per batch-1 step: the fasttx workers' own, the others' from their fasttx
    # counterpart (loaded here, after the timing, if it did not run).
    weight_bytes = weight_bytes_per_runtime(
        list(report_runtimes),
        {rt: info["decode_weight_bytes"] for rt, info in report_runtimes.items()},
        bench.fasttx_dtypes, bench.weight_counterparts,
        lambda rt: load_weight_bytes(bench, args, rt),
    )
    for rt, wb in weight_bytes.items():
        report_runtimes[rt]["decode_weight_bytes"] = wb["bytes"]
        report_runtimes[rt]["decode_weight_bytes_from"] = wb["from"]

    versions = {"python": platform.python_version()}
    for info in report_runtimes.values():
        versions.update(info["versions"])
    fields = bench.report_fields(args, pool)
    report = {
        "benchmark": bench.name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine,
        "load_average_before_after": [load_before, os.getloadavg()],
        "versions": versions,
        "model": fields.get("model", {}),
        "setup": fields.get("setup", {}),
        "workloads": args.workloads,
        "runtimes": report_runtimes,
        "agreement_with_pytorch": agreement,
        "skipped": skipped,
        "warnings": warnings,
        "wall_s": time.time() - started,
    }
    if ready_checks:
        report["checks"] = ready_checks
    report["percent_of_bandwidth"] = bandwidth_percentages(report, bench.batch1_workloads())
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    if getattr(args, "no_chart", False):
        chart, chart_note = None, "skipped (--no-chart)"
    else:
        chart, chart_note = write_chart(report, chart_path(out), bench.labels)
    report["chart"] = None if chart is None else str(chart)
    out.write_text(json.dumps(report, indent=1) + "\n")

    print()
    print(f"Machine: {machine['cpu']}, {machine['physical_cores']} physical cores / "
          f"{machine['logical_cpus']} logical CPUs, {args.threads} threads per runtime")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"Load average before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    header = bench.print_header(args)
    if header:
        print(header + "\n")
    print(bench.table(report))
    print()
    for line in bandwidth_lines(report, bench.labels, bench.bandwidth_note):
        print(line)
    print()
    for key, a in agreement.items():
        line = f"agreement with PyTorch {key}: {a['identical_sequences']}/{a['of']} sequences identical"
        if "matching_leading_tokens" in a:
            line += " (leading tokens equal: " + ", ".join(
                f"{m}/{n}" for m, n in zip(a["matching_leading_tokens"], a["of_tokens"])) + ")"
        print(line)
    for key, value in extra_checks.items():
        print(f"{key}: {json.dumps(value)}")
    for rt, reason in skipped.items():
        print(f"skipped {rt}: {reason.strip().splitlines()[-1]}")
    for w in warnings:
        print(w)
    print(f"raw numbers: {args.out}  (total {report['wall_s']:.0f} s)")
    print(f"chart: {chart}" if chart is not None else f"chart: not written: {chart_note}")
    # The workers' logs only matter when something went wrong.
    if warnings or skipped:
        print(f"worker logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0
