"""Batch jobs on Ray Data: ``Generator``, a callable class for ``Dataset.map_batches``.

    import fasttx.ray
    ds.map_batches(fasttx.ray.Generator, fn_constructor_kwargs={"model": path, "max_new_tokens": 64},
                   concurrency=2, num_cpus=1, batch_size=32)

Each actor loads the model once, with as many compute threads as the CPUs Ray gave it
(``num_cpus``), so actors sharing a node do not oversubscribe it. A batch's column ``"prompt"``
goes through ``model.generate`` as it is (no chat template); a column ``"messages"`` (each row a
list of ``{"role", "content"}`` dicts) through the chat template as ``model.chat`` applies it. The
batch comes back with its columns and an added ``"output"``: the generated text, or a list of texts
per row with ``num_return_sequences > 1``. fasttx's results do not depend on the other prompts of a
batch, so the output of a row is what ``model.generate`` (or ``model.chat``) gives it alone,
whatever ``batch_size`` and ``concurrency`` are, seeded sampling included (equal prompts get equal
texts). Batches may be dicts of numpy arrays (Ray's default), pandas DataFrames or Arrow tables.

Needs Ray Data: ``pip install "fasttx[ray]"``. ``import fasttx`` does not import Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

try:
    import ray
except ImportError as e:  # the extra is optional: say how to get it
    raise ImportError('fasttx.ray needs Ray Data: pip install "fasttx[ray]"') from e

import numpy as np

from .loading import default_threads, load
from .model import DEFAULT_BATCH_SIZE, Model

__all__ = ["Generator"]

PROMPT = "prompt"
MESSAGES = "messages"
OUTPUT = "output"


class Generator:
    """``fasttx.load(model)`` once per Ray actor, then generated text for each batch.

    ``ds.map_batches(fasttx.ray.Generator, fn_constructor_kwargs={"model": path, "max_new_tokens": 64},
    concurrency=2, num_cpus=1, batch_size=32)``

    ``options``: generation options as ``model.generate`` takes them (``max_new_tokens``,
    ``do_sample``, ``temperature``, ``seed``, ``num_return_sequences``, ``stop``, ``tgt_lang``,
    ...), and ``batch_size``, the prompts fasttx decodes together within a Ray batch (default 32).
    They are checked here, when the actor starts: a bad one raises ``ValueError`` before any batch
    runs. Threads: the CPUs Ray assigned to this actor (rounded down, at least 1); called outside a
    Ray worker, fasttx's default (``FASTTX_NUM_THREADS``, else the physical cores).
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.model: Model = load(model, threads=_assigned_threads())
        self._batch_size = options.pop("batch_size", DEFAULT_BATCH_SIZE)
        if isinstance(self._batch_size, bool) or not isinstance(self._batch_size, int) or self._batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self._batch_size!r}")
        # The checks generate makes on every call, made once here so that a typo fails the job at
        # its start, not after the first batch reached a worker.
        self.model._options(self.model._target_language(options)[0])
        self.options = options

    def __call__(self, batch: Any) -> Any:
        """``batch`` (a dict of numpy arrays, Ray's default; a ``pandas.DataFrame``; or a
        ``pyarrow.Table``) with the column ``"output"`` added."""
        if isinstance(batch, Mapping):
            columns = list(batch)
        elif _is_dataframe(batch):
            columns = list(batch.columns)
        elif _is_arrow_table(batch):
            columns = list(batch.column_names)
        else:
            raise TypeError(
                f"fasttx.ray.Generator takes a batch as a dict of numpy arrays, a pandas.DataFrame or a "
                f"pyarrow.Table (map_batches' batch_format 'numpy', 'pandas' or 'pyarrow'), "
                f"got {type(batch).__name__}"
            )
        if OUTPUT in columns:
            raise ValueError(f"the batch already has a column {OUTPUT!r}, where the generated text would go: rename it")
        if PROMPT in columns and MESSAGES in columns:
            raise ValueError(f"the batch has both {PROMPT!r} and {MESSAGES!r} columns: keep one")
        if PROMPT in columns:
            prompts = _column(batch, PROMPT)
            for p in prompts:
                if not isinstance(p, str):
                    raise ValueError(f"each {PROMPT!r} must be a string, got {p!r}")
            texts = self._generate(prompts, add_special_tokens=True)
        elif MESSAGES in columns:
            conversations = _column(batch, MESSAGES)
            prompts = [self.model.chat_prompt(_messages(row)) for row in conversations]
            # As model.chat: a rendered template is tokenized without adding special tokens again.
            texts = self._generate(prompts, add_special_tokens=False)
        else:
            raise ValueError(
                f"fasttx.ray.Generator needs a column {PROMPT!r} (text) or {MESSAGES!r} (chat messages); "
                f"the batch has {columns}"
            )
        if _is_arrow_table(batch):
            import pyarrow

            return batch.append_column(OUTPUT, pyarrow.array(texts))
        added = {OUTPUT: _objects(texts)}
        if MESSAGES in columns:
            # Ray hands a list of structs over as numpy arrays of dicts, and cannot tell their Arrow
            # type on the way back: it would store pickled Python objects, which the Parquet and
            # JSON writers do not write as the messages they are. Plain lists of dicts it can.
            added[MESSAGES] = _objects(conversations)
        if isinstance(batch, Mapping):
            return {**batch, **added}
        return batch.assign(**added)

    def _generate(self, prompts: list[str], *, add_special_tokens: bool) -> list:
        """Each prompt's text as ``model.generate`` (or ``model.chat``) gives it alone.

        One call for the whole batch: fasttx batches and pads inside it without changing a row's
        result. Only equal prompts interact: sampling gives the second occurrence of a prompt in a
        call another draw than the first, so a prompt's text would depend on whether a copy of it
        happened to land in the same Ray batch. Equal prompts (the same tokens) are generated once
        and share the text, which is what each gives alone."""
        if not prompts:
            return []
        keys = [tuple(ids) for ids in self.model._encode(prompts, add_special_tokens)]
        first: dict = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        texts = self.model._generate_text(
            [prompts[i] for i in first.values()],
            self.options,
            add_special_tokens=add_special_tokens,
            batch_size=self._batch_size,
            progress=False,
        )
        by_key = dict(zip(first, texts))
        # Several texts per prompt: each row its own list, though equal prompts share the texts.
        return [by_key[key] if isinstance(by_key[key], str) else list(by_key[key]) for key in keys]


def _assigned_threads() -> int:
    """The CPUs Ray assigned to this worker (an actor's ``num_cpus``), rounded down, at least 1;
    fasttx's default outside a Ray worker (the driver, or a plain Python call)."""
    # Only a worker has assigned resources (the driver's context refuses the question).
    if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        # An actor given no CPU (num_cpus=0) gets one thread: sharing the node's cores is the
        # oversubscription that num_cpus is there to prevent.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
        return max(1, math.floor(cpus))
    return default_threads()


def _is_dataframe(batch: Any) -> bool:
    # pandas comes with ray[data]; imported only when the batch is not a dict.
    import pandas

    return isinstance(batch, pandas.DataFrame)


def _is_arrow_table(batch: Any) -> bool:
    import pyarrow

    return isinstance(batch, pyarrow.Table)


def _column(batch: Any, name: str) -> list:
    """A column's values as plain Python values, whatever the batch format."""
    if _is_arrow_table(batch):
        return batch.column(name).to_pylist()
    return [_plain(v) for v in batch[name]]


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values``: one entry per row even when each is a list (several texts
    per prompt, a conversation), which np.array would turn into a 2-D array."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _plain(value: Any) -> Any:
    """Python values for what Arrow hands over as numpy: arrays to lists, numpy scalars to Python
    scalars, recursively; anything else as it is (a non-string prompt is then refused by generate)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _messages(row: Any) -> list[dict]:
    """One row of ``"messages"`` (plain values) as model.chat takes it: a list of dicts. Arrow
    stores a list of dicts as a list of structs whose fields are the union of every message's keys,
    so a key a message did not have comes back as None: it is dropped (a template testing
    ``message.name is defined`` must see what the user wrote)."""
    messages = row
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ValueError(f"each {MESSAGES!r} entry must be a list of {{'role', 'content'}} dicts, got {row!r}")
    return [{k: v for k, v in m.items() if v is not None} for m in messages]
