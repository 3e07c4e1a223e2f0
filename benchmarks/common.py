"""What the profiling scripts here share: the model options, loading, and the benchmark prompts.

The prompts are ``fasttx bench``'s own (``fasttx.bench.smollm2.MESSAGES``, T5's 32 source
tokens), so that a figure from these scripts and one from ``fasttx bench`` describe the same work.
"""

from __future__ import annotations

import argparse

import numpy as np

import fasttx
from fasttx.bench.smollm2 import MESSAGES
from fasttx.bench.t5 import DEFAULT_MODEL_DIR as T5_MODEL_DIR  # noqa: F401  (re-exported for the scripts)


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """``--model``, ``--dtype``, ``--threads``."""
    ap.add_argument("--model", default=None, help="model directory or .gguf (default: SmolLM2)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "f32", "int8"])
    ap.add_argument("--threads", type=int, default=2)


def default_model() -> str:
    """The SmolLM2 GGUF that ``fasttx generate`` uses (fetched once if needed)."""
    from fasttx.hub import default_model_path

    return str(default_model_path(progress=True))


def load_model(args: argparse.Namespace):
    """``fasttx.load`` of ``--model`` (default: SmolLM2) with ``--dtype`` and ``--threads``;
    ``args.model`` is set to what was loaded."""
    if args.model is None:
        args.model = default_model()
    return fasttx.load(args.model, dtype=args.dtype, threads=args.threads)


def prompt_ids(model, batch: int = 1) -> np.ndarray:
    """The benchmark prompt as ids, ``batch`` copies: 32 source tokens for an encoder-decoder
    model, the chat prompt of ``fasttx bench smollm2`` for a decoder."""
    if model.is_encoder_decoder:
        return np.arange(3, 35, dtype=np.int64)[None, :].repeat(batch, 0)
    text = model.chat_prompt(MESSAGES)
    return np.array([model.tokenizer.encode(text, add_special_tokens=False).ids] * batch, dtype=np.int64)
