"""``fasttx.load`` on corrupted copies of the fixture models: random byte flips, overwrites with
boundary values, and truncations of every file the loader reads (config.json, tokenizer.json,
tokenizer_config.json, generation_config.json, model.safetensors, the shard index and its
shards, model.gguf). Each load must either succeed or raise ``fasttx.ModelFormatError``,
``ValueError`` or ``FileNotFoundError`` within 10 s: a panic surfacing as ``RuntimeError``, any
other exception, a hang, or a process killed by a signal (abort, segfault) fails.

The loads run in a worker subprocess (one per fixture, all its mutants in a row) so that a crash
is caught and pinned on the mutant that was loading. Mutants are drawn from a seeded generator:
``python tests/test_load_mutations.py FIXTURE FILE INDEX`` replays one. ``FASTTX_MUTATIONS``
(mutants per file, default 100) raises the count for a long run."""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# Each fixture model, with the path `fasttx.load` is given (relative to its directory) and the
# files to corrupt. Together they cover every file kind the loader reads.
MODELS = {
    "gpt2": (".", ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]),
    "qwen2": (".", ["config.json", "generation_config.json", "tokenizer.json", "model.safetensors"]),
    "t5_sharded": (
        ".",
        [
            "config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ],
    ),
    "llama_gguf_q4_0": ("model.gguf", ["model.gguf"]),
    "llama_gguf_q8_0": ("model.gguf", ["model.gguf"]),
}

# What the fixture directories hold besides the model (reference outputs): not copied.
NOT_READ = {"expected.json", "logits.npz"}

SECONDS_PER_LOAD = 10
# Mutated files are a few hundred KB; a load needing more than this is out of proportion to them.
ADDRESS_SPACE_LIMIT = 6 << 30


def mutations_per_file() -> int:
    return int(os.environ.get("FASTTX_MUTATIONS", "100"))


# ------------------------------------------------------------------------------------------------
# Mutants
# ------------------------------------------------------------------------------------------------

# Values that make size and count fields interesting: zero, all ones, sign bits, just past 32 bits.
BOUNDARY_VALUES = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    0xFFFF_FFFF_FFFF_FFFF,
]


def header_bytes(data: bytes) -> int:
    """How many leading bytes describe the rest: a safetensors file's length field and JSON header;
    for other files the first 8 KiB (a GGUF fixture's metadata and tensor table; all of a JSON file)."""
    if len(data) >= 8:
        claimed = int.from_bytes(data[:8], "little")
        if 8 + claimed <= len(data):
            return 8 + claimed
    return min(len(data), 8192)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of `data` and a description of it. Half of the edits land in the header, where
    every byte matters; the rest anywhere."""
    n = len(data)
    head = max(1, header_bytes(data))

    def position() -> int:
        return rng.randrange(head if rng.random() < 0.5 else n)

    kind = rng.choice(["flip", "flip", "overwrite", "truncate"])
    if kind == "truncate" or n == 0:
        cut = rng.randrange(n) if n else 0
        return data[:cut], f"truncated to {cut} of {n} bytes"
    out = bytearray(data)
    if kind == "flip":
        spots = sorted(position() for _ in range(rng.randint(1, 8)))
        for p in spots:
            out[p] ^= rng.randrange(1, 256)
        return bytes(out), f"bytes flipped at {spots}"
    width = rng.choice([1, 2, 4, 8])
    value = rng.choice(BOUNDARY_VALUES) & ((1 << (8 * width)) - 1)
    p = min(position(), n - width) if n >= width else 0
    out[p : p + width] = value.to_bytes(width, "little")[: n - p]
    return bytes(out), f"{width}-byte {value:#x} written at {p}"


def mutant(fixture: str, name: str, index: int) -> tuple[bytes, str]:
    """Mutant `index` of fixture file `name`: the same bytes on every run and machine."""
    rng = random.Random(f"{fixture}/{name}/{index}")
    return mutate((FIXTURES / fixture / name).read_bytes(), rng)


# ------------------------------------------------------------------------------------------------
# The worker (runs in a subprocess)
# ------------------------------------------------------------------------------------------------


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _replace(path: Path, data: bytes) -> None:
    """Puts `data` at `path` as a new file: anything still mapping the old one keeps its pages
    (rewriting a mapped file in place could fault the process, as README's "Untrusted files" says)."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_bytes(data)
    os.replace(staged, path)


def worker(fixture: str, cases: list[tuple[str, int]]) -> None:
    """Loads each mutant of `cases` from a private copy of `fixture`, printing one JSON line when a
    load starts and one with its outcome (so the parent knows which mutant a crash belongs to)."""
    import fasttx

    _limit_memory()
    load_path, _ = MODELS[fixture]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / fixture
        model_dir.mkdir()
        for f in (FIXTURES / fixture).iterdir():
            if f.is_file() and f.name not in NOT_READ:
                shutil.copy(f, model_dir / f.name)
        for name, index in cases:
            data, what = mutant(fixture, name, index)
            _replace(model_dir / name, data)
            print(json.dumps({"start": [name, index], "what": what}), flush=True)
            began = time.monotonic()
            try:
                model = fasttx.load(model_dir / load_path, threads=1)
                del model
                outcome = {"ok": True}
            except (fasttx.ModelFormatError, ValueError, FileNotFoundError) as e:
                outcome = {"ok": True, "error": f"{type(e).__name__}: {e}"[:300]}
            except BaseException as e:  # anything else is outside the contract
                outcome = {"ok": False, "error": f"{type(e).__module__}.{type(e).__name__}: {e}"[:500]}
            outcome["seconds"] = round(time.monotonic() - began, 3)
            print(json.dumps(outcome), flush=True)
            _replace(model_dir / name, (FIXTURES / fixture / name).read_bytes())


# ------------------------------------------------------------------------------------------------
# The parent
# ------------------------------------------------------------------------------------------------


def run_worker(fixture: str, cases: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """Runs `cases` of `fixture` in worker subprocesses; returns each failing case's reason. A
    worker that crashes or hangs is blamed on the case it was loading, and a new worker goes on
    with the cases after it."""
    failures: dict[tuple[str, int], str] = {}
    todo = list(cases)
    while todo:
        # A file, not a pipe: a worker writing much to stderr must not block on a full pipe.
        stderr_file = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", fixture, json.dumps(todo)],
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current, what, done = None, "", 0
        deadline = time.monotonic() + 60  # the import, before the first load
        hung = False
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                hung = True
                proc.kill()
                break
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "start" in msg:
                current, what = tuple(msg["start"]), msg["what"]
                deadline = time.monotonic() + SECONDS_PER_LOAD
                continue
            done += 1
            if not msg["ok"]:
                failures[current] = f"{what}: {msg['error']}"
            elif msg["seconds"] > SECONDS_PER_LOAD:
                failures[current] = f"{what}: took {msg['seconds']} s"
            current = None
        code = proc.wait()
        sel.close()
        stderr_file.seek(0)
        stderr = stderr_file.read()
        stderr_file.close()
        if current is None:
            assert code == 0 and done == len(todo), f"worker for {fixture} failed outside a load:\n{stderr[-2000:]}"
            break
        if hung:
            cause = f"no result after {SECONDS_PER_LOAD} s (hang)"
        elif code < 0:
            cause = f"process killed by signal {-code}"
        else:
            cause = f"process exited with status {code}"
        failures[current] = f"{what}: {cause}; stderr: {stderr.strip()[-400:]}"
        todo = todo[todo.index(list(current)) + 1 :]
    return failures


_results: dict[str, dict[tuple[str, int], str]] = {}


def fixture_failures(fixture: str) -> dict[tuple[str, int], str]:
    """All mutants of `fixture`'s files, run once per test session in one worker."""
    if fixture not in _results:
        _, names = MODELS[fixture]
        cases = [(name, i) for name in names for i in range(mutations_per_file())]
        _results[fixture] = run_worker(fixture, [list(c) for c in cases])
    return _results[fixture]


@pytest.mark.parametrize(
    "fixture,name",
    [pytest.param(fixture, name, id=f"{fixture}/{name}") for fixture, (_, names) in MODELS.items() for name in names],
)
def test_corrupted_file_loads_or_raises_a_format_error(fixture, name):
    failures = {k: v for k, v in fixture_failures(fixture).items() if k[0] == name}
    report = "\n".join(
        f"  mutant {i} ({sys.executable} {__file__} {fixture} {n} {i}): {why}" for (n, i), why in sorted(failures.items())
    )
    assert not failures, f"{len(failures)} corrupted copies of {fixture}/{name} broke the loader:\n{report}"


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(sys.argv[2], [tuple(c) for c in json.loads(sys.argv[3])])
    else:
        # Replays one mutant in this process: FIXTURE FILE INDEX.
        fixture, name, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
        print(mutant(fixture, name, index)[1], file=sys.stderr)
        worker(fixture, [(name, index)])
