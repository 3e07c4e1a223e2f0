"""``fasttx.load``: find a model's files, read its configs and tokenizer, build the native model."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ._native import GgufArray, ModelFormatError, NativeModel, architectures, gguf_config, gguf_metadata
from .generation.options import GENERATION_KEYS, ignored_generation_keys

DTYPES = ("auto", "f32", "int8")

# gguf_metadata's arrays are read-only sequences over the file (decoded when read).
Sequence.register(GgufArray)

# Compute threads per CPU this process may use, at most (as the native pool checks): beyond that
# threads only add switching, and a typo like threads=10**6 must not start threads by the thousand.
MAX_THREADS_PER_CPU = 4


def default_threads() -> int:
    """``FASTTX_NUM_THREADS`` if set, else the number of physical cores this process may use."""
    env = os.environ.get("FASTTX_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"FASTTX_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"FASTTX_NUM_THREADS must be a positive integer, got {env!r}")
        return _check_threads("FASTTX_NUM_THREADS", n)
    return physical_cores()


def _check_threads(what: str, n: int) -> int:
    """``n`` if it is at most ``MAX_THREADS_PER_CPU`` per CPU this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = MAX_THREADS_PER_CPU * max(1, cpus)
    if n > limit:
        raise ValueError(f"{what} must be at most {limit} ({MAX_THREADS_PER_CPU} per CPU this process may use), got {n}")
    return n


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads share a core's FMA units)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _resolve_path(path: Union[str, os.PathLike]) -> Path:
    p = Path(path).expanduser()
    if p.exists():
        return p
    text = str(path)
    looks_like_repo = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if looks_like_repo:
        try:
            from huggingface_hub import snapshot_download  # optional
        except ImportError:
            raise FileNotFoundError(
                f"{text!r} is not a local path, and huggingface_hub is not installed to fetch it from "
                "the Hub (pip install huggingface_hub, or download the model directory yourself)"
            ) from None
        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model"]))
        except Exception as e:  # network or repo errors: say what failed
            raise FileNotFoundError(f"{text!r} is not a local path and could not be fetched from the Hub: {e}") from e
    raise FileNotFoundError(f"no such model file or directory: {text!r}")


# The files ``load`` may read from a model directory by name (besides the shards an index lists);
# :func:`_check_model_files` refuses any that is a link to outside the directory.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
    "model.safetensors.index.json",
)


def _allowed_roots(directory: Path) -> list[Path]:
    """Where a model directory's files may really lie: inside the directory, and for a Hugging Face
    cache snapshot (whose files are links to ``../../blobs/<hash>``) in its repository's blobs."""
    real = directory.resolve()
    roots = [real]
    if real.parent.name == "snapshots":
        roots.append(real.parent.parent / "blobs")
    return roots


def _inside_model(directory: Path, name: str, source: Path) -> Path:
    """``directory / name``, refused unless its real path (every link resolved) lies in the model
    directory: a model comes from strangers, and its index or links must not make fasttx open (and
    quote in errors) ``/etc/passwd`` or a neighbouring model. ``source`` names what gave ``name``."""
    path = directory / name
    try:
        real = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL in the name
        raise ModelFormatError(f"{source}: {name!r} is not a usable file name ({e})") from None
    if not any(real.is_relative_to(root) for root in _allowed_roots(directory)):
        raise ModelFormatError(
            f"{source}: {name!r} lies outside the model directory {directory} (it resolves to {real}); "
            "fasttx opens only files inside it"
        )
    return path


def _check_model_files(directory: Path) -> None:
    """Every file of :data:`MODEL_FILES` present in ``directory`` lies inside it, links resolved."""
    for name in MODEL_FILES:
        path = directory / name
        if path.is_symlink() or path.exists():
            _inside_model(directory, name, path)


def _weight_files(directory: Path) -> list[str]:
    """The safetensors files to open: ``model.safetensors``, or the shards the index lists (each
    checked to lie inside the model directory; the fixed names are checked by
    :func:`_check_model_files`)."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return [str(single)]
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFormatError(f"{index}: no weight_map")
        bad = next((v for v in weight_map.values() if not isinstance(v, str) or not v), None)
        if bad is not None:
            raise ModelFormatError(f"{index}: weight_map values must be shard file names, got {bad!r}")
        files = [_inside_model(directory, s, index) for s in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f}: shard listed in {index.name} is missing")
        return [str(f) for f in files]
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ModelFormatError(
            f"{directory} holds PyTorch pickle weights only; fasttx reads safetensors "
            "(save with model.save_pretrained(dir, safe_serialization=True))"
        )
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")


def generation_defaults(directory: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What transformers puts in ``model.generation_config``: ``generation_config.json`` if present,
    else the generation keys of ``config.json``."""
    gen_path = directory / "generation_config.json"
    source = _read_json(gen_path) if gen_path.is_file() else config
    ignored = ignored_generation_keys(source)
    if ignored:
        import warnings

        where = gen_path if gen_path.is_file() else directory / "config.json"
        warnings.warn(
            f"{where}: fasttx does not implement the generation setting(s) "
            f"{', '.join(f'{k}={v!r}' for k, v in ignored.items())}; generate() runs without them, "
            "so its output can differ from transformers'",
            UserWarning,
            stacklevel=3,
        )
    defaults = {k: v for k, v in source.items() if k in GENERATION_KEYS and v is not None}
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        if key not in defaults and config.get(key) is not None:
            defaults[key] = config[key]
    return defaults


def load(path: Union[str, os.PathLike], *, dtype: str = "auto", threads: Optional[int] = None):
    """Loads a model for generation on CPU: a Hugging Face directory (config.json, safetensors,
    tokenizer.json, generation_config.json) or a ``.gguf`` file.

    ``dtype``: ``"auto"`` (f32 compute for safetensors; a GGUF file's Q4_0/Q4_1/Q8_0 weights kept
    and run natively), ``"f32"`` (everything dequantized: transformers' exact numbers) or
    ``"int8"`` (every projection quantized per output channel at load). ``threads``: compute
    threads (default ``FASTTX_NUM_THREADS``, else the physical cores), at most ``MAX_THREADS_PER_CPU``
    per CPU this process may use."""
    from .model import Model

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}, got {dtype!r}")
    if threads is None:
        threads = default_threads()
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    else:
        _check_threads("threads", threads)

    directory = _resolve_path(path)
    if directory.is_file():
        if directory.suffix.lower() == ".gguf":
            return _load_gguf(directory, dtype, threads)
        raise ModelFormatError(
            f"{directory}: expected a model directory (config.json + model.safetensors) or a .gguf file"
        )
    _check_model_files(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json")
    config = _read_json(config_path)
    arch = config.get("model_type")
    supported = [a["model_type"] for a in architectures()]  # the native registry's list
    if arch not in supported:
        raise ModelFormatError(
            f"{config_path}: unsupported architecture model_type={arch!r}; fasttx supports {', '.join(supported)}"
        )
    native = NativeModel(arch, json.dumps(config), _weight_files(directory), dtype, threads)
    tokenizer = _load_tokenizer(directory / "tokenizer.json")

    return Model(
        native=native,
        arch=arch,
        config=config,
        tokenizer=tokenizer,
        generation_config=generation_defaults(directory, config),
        path=directory,
        chat_template=_chat_template(directory),
    )


def _chat_template(directory: Path) -> Optional[str]:
    """``chat_template`` from tokenizer_config.json, or a chat_template.jinja file beside it."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        template = _read_json(cfg).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def _load_tokenizer(tokenizer_json: Path, gguf: Optional[tuple[Path, dict]] = None):
    """``tokenizer_json`` if the file exists, else the tokenizer described by the metadata of the
    GGUF file ``gguf`` (path, metadata), else ``None``. A tokenizer that cannot be built is a
    ``ModelFormatError`` naming its file (the tokenizers library raises bare ``Exception``s)."""
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:
            raise ModelFormatError(f"{tokenizer_json}: cannot be read by tokenizers: {e}") from e
    if gguf is None:
        return None
    from .gguf_tokenizer import tokenizer_from_gguf

    path, meta = gguf
    try:
        return tokenizer_from_gguf(meta)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None


def _load_gguf(path: Path, dtype: str, threads: int):
    from .model import Model

    meta = gguf_metadata(path)
    arch, config = gguf_config(path)  # transformers' config.json for the file, built natively
    # The tokenizer first: building it from the metadata's token/merge lists takes a transient
    # ~100 MB for a 150k vocabulary, which then does not add to the weights' memory (peak RSS).
    tokenizer_meta = {
        k: v.tolist() if isinstance(v, GgufArray) and k.startswith("tokenizer.ggml.") else v for k, v in meta.items()
    }
    tokenizer = _load_tokenizer(path.parent / "tokenizer.json", gguf=(path, tokenizer_meta))
    del tokenizer_meta
    try:
        native = NativeModel(arch, json.dumps(config), [str(path)], dtype, threads)
    except ModelFormatError as e:
        # The model checks tensor shapes against the config without knowing the file: name it.
        if str(path) in str(e):
            raise
        raise ModelFormatError(f"{path}: {e}") from None
    generation_config = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    _return_freed_heap()
    return Model(
        native=native,
        arch=arch,
        config=meta,
        tokenizer=tokenizer,
        generation_config=generation_config,
        path=path,
        chat_template=meta.get("tokenizer.chat_template"),
    )


def _return_freed_heap() -> None:
    """Hands the heap pages that loading freed back to the system. Building a tokenizer from a GGUF
    file's token and merge lists goes through ~100 MB of short-lived Python and JSON objects for a
    150k vocabulary; glibc keeps much of that (about 15 MB for Qwen2.5's) in its free lists, where
    it still counts in the process's resident memory. Other C libraries (musl, macOS) have no
    ``malloc_trim`` and return memory their own way: nothing to do there."""
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
