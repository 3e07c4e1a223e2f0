"""``fasttx serve``: an OpenAI-compatible HTTP server with continuous batching.

    fasttx serve --model model.gguf --port 8000          # or, in Python:
    import fasttx.serve
    fasttx.serve.run("model.gguf", port=8000)
    app = fasttx.serve.create_app(fasttx.load("model.gguf"))   # an ASGI app for your own server

The HTTP side needs the ``serve`` extra (``pip install "fasttx[serve]"``: FastAPI and uvicorn); it is
imported only when an app is made, so ``fasttx.serve.engine`` (the batching engine, plain Python)
works without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["create_app", "run", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_QUEUE"]

# Rows decoding at once, and requests waiting for a row before new ones are refused (503).
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUE = 64

_MISSING_EXTRAS = 'fasttx serve needs FastAPI and uvicorn: pip install "fasttx[serve]"'


def _require_extras() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_MISSING_EXTRAS} ({e})") from e


def _load(model, *, threads: Optional[int] = None, dtype: str = "auto"):
    """A loaded ``fasttx.Model`` from a model, a path, or None (``$FASTTX_MODEL``, else the default
    SmolLM2, as ``fasttx generate`` resolves it)."""
    import fasttx

    if isinstance(model, fasttx.Model):
        return model
    if model is None:
        model = os.environ.get("FASTTX_MODEL")
    if model is None:
        from ..hub import default_model_path

        model = default_model_path(progress=True)
    return fasttx.load(model, dtype=dtype, threads=threads)


def default_model_id(model) -> str:
    """The name clients see in ``/v1/models`` and in responses: the model file or directory name
    (without ``.gguf``), never the path leading to it."""
    path = Path(model.path)
    return path.stem if path.suffix == ".gguf" else path.name


def create_app(
    model,
    *,
    model_id: Optional[str] = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_queue: int = DEFAULT_MAX_QUEUE,
    api_key: Optional[str] = None,
):
    """The FastAPI (ASGI) app serving ``model`` (a ``fasttx.Model`` or a path to load). Its engine
    starts with the app (lifespan) and stops with it. ``api_key``: required as
    ``Authorization: Bearer <key>`` on every ``/v1`` route (``/health`` needs none)."""
    _require_extras()
    from .app import build_app

    model = _load(model)
    return build_app(
        model,
        model_id=model_id or default_model_id(model),
        max_batch=max_batch,
        max_queue=max_queue,
        api_key=api_key,
    )


def run(
    model: Union[str, os.PathLike, None] = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_queue: int = DEFAULT_MAX_QUEUE,
    api_key: Optional[str] = None,
    threads: Optional[int] = None,
    dtype: str = "auto",
    model_id: Optional[str] = None,
    log_level: str = "info",
) -> None:
    """Loads ``model`` (default: as ``fasttx generate``) and serves it until interrupted. The
    default host is loopback only: pass ``host="0.0.0.0"`` (and an ``api_key``) to expose it."""
    _require_extras()
    import uvicorn

    app = create_app(
        _load(model, threads=threads, dtype=dtype),
        model_id=model_id,
        max_batch=max_batch,
        max_queue=max_queue,
        api_key=api_key,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
