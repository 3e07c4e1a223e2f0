"""Starting the worker processes: which runtimes can run, their command lines and environment.

Each runtime lives in its own worker subprocess (``python -m fasttx.bench BENCH --worker RUNTIME
--threads T ...``), so that peak RSS is per runtime and no library state leaks between them.
Workers are started one after the other, so that load times are not measured under contention.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from .protocol import Worker, WorkerError

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


def worker_command(bench, runtime: str, args, threads: int) -> list[str]:
    """The command line of a worker of ``runtime`` computing with ``threads`` threads.

    Runtimes other than fasttx get the same entry point through a small bootstrap that does not
    import fasttx itself (see ``_STUB_BOOTSTRAP``).
    """
    rest = [bench.name, "--worker", runtime, "--threads", str(threads), *bench.worker_args(args)]
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


def available_runtimes(bench, runtimes: Sequence[str], skipped: dict) -> list[str]:
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
    """Start workers one at a time; a runtime whose worker fails to load is recorded in
    ``skipped`` with the reason."""
    workers = {}
    for rt in runtimes:
        try:
            workers[rt] = Worker(rt, make_cmd(rt), log_dir, env=worker_env())
            print(f"  {rt}: loaded in {workers[rt].ready['load_s']:.2f} s", flush=True)
        except WorkerError as exc:
            skipped[rt] = str(exc)
            print(f"  SKIP {rt}: {str(exc).strip().splitlines()[-1]}", flush=True)
    return workers
