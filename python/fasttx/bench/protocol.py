"""The JSON-lines protocol between the parent and a worker process, both ends.

The parent writes one request per line to the worker's stdin; the worker answers one line on a
private copy of its original stdout (fd 1 itself is pointed at stderr, so stray prints from
libraries cannot corrupt the protocol).  Worker stderr goes to a log file that is shown when a
worker fails.

- The first line a worker writes is its ready message: ``{"import_s", "load_s", "versions",
  "native_files", ...}`` or ``{"error": traceback}``; fasttx workers add ``decode_weight_bytes``
  (the weights one batch-1 step streams), and a runtime may add more (``ready_info``).
- ``{"cmd": "generate", "input_ids": [[...]], "options": {...}}`` is answered by
  ``{"seconds": s, "sequences": [[new tokens], ...]}`` (or ``{"error": traceback}``).
- ``{"cmd": "exit"}`` is answered by ``{"maxrss_kb": n}``, the worker's peak RSS.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence


class WorkerError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Worker end
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
                    if path.startswith(directory) and ".so" in os.path.basename(path) and path not in found:
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
        path = getattr(sys.modules.get(package), "__file__", None)
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
    """The paths of ``files`` (from ``native_files``) whose size or mtime changed since."""
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


def serve(bench, runtime: str, args) -> None:
    """The worker's whole life: load ``runtime`` of benchmark ``bench``, send the ready message,
    answer generate requests until ``exit``."""
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
# Parent end
# ---------------------------------------------------------------------------


class Worker:
    """A running worker subprocess, spoken to through the protocol above."""

    def __init__(self, runtime: str, cmd: Sequence[str], log_dir: Path, env: Optional[dict] = None):
        self.runtime = runtime
        self.log_path = log_dir / f"worker-{runtime}.log"
        self.log = open(self.log_path, "w")
        self.dead = False
        self.proc = subprocess.Popen(
            list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
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
