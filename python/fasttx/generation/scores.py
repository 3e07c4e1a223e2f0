"""What a decoding step does to the scores, in the one order API.md fixes, and what it reports.

``Pipeline`` is the single place where a step's scores are processed before a token is chosen:

1. the built-in processors (``processors.build``: repetition penalty, n-gram and bad-word bans,
   minimum lengths, forced tokens) and any engine-specific ones (the server's OpenAI penalties);
2. the user's ``logits_processor`` callables, in order, with transformers' signature
   ``fn(input_ids, scores) -> scores`` (transformers appends custom processors after its own list
   and before the sampling warpers: ``_get_logits_processor`` merges them before adding the
   warpers; in beam search they see log-probabilities, as transformers' processors do);
3. the constraint's token mask (``-inf`` on the tokens a row may not take next), last, so that no
   processor can re-enable a token the constraint forbids.

The constraint plugs in through ``search.pipeline`` (``Pipeline(..., constraint=...)``): a
``processors.Processor`` ``(scores, history, rows) -> None`` that sets ``-inf`` in place. It sees
each row's full token history (``history[i]``: the prompt as transformers holds it, then the tokens
chosen so far), so a per-row matcher can be advanced from it or keyed by it; ``rows[i]`` is the
row's generated-sequence index (beam search: the running beam slot, ``range(batch * beams)``,
whose sequence changes as beams are reordered: go by the history there). Greedy and sampling call
it for the unfinished rows (every row when finished ones are kept, see ``search.RowDecisions``).

The caller then applies sampling's warpers and draws, takes the argmax, or (beam search) adds the
running scores and takes the top candidates. ``search.RowDecisions`` (greedy and sampling, also
the serving engine's per-request decisions), ``search.beam_search`` and ``prompt_lookup.decode``
all go through ``Pipeline.apply``.

Cost of ``logits_processor``: each step builds ``input_ids`` as a numpy ``int64`` array
``[rows, length]`` (a copy of the token history) and calls each function once with the float32
scores ``[rows, vocab]``; with it, finished rows stay in the batch (see ``search.RowDecisions``)
so that row ``i`` of every call is always the same sequence, as in transformers.

``token_logprobs`` is the rule for ``logprobs=k`` (the text API and the server's OpenAI
``logprobs``): the log-softmax of the scores the token was chosen from, i.e. after the pipeline and
divided by the temperature when sampling (top-k/top-p/min-p do not cut the distribution reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import processors

# transformers' custom processor signature: fn(input_ids [rows, length] int64, scores [rows, vocab]
# float32) -> scores.
LogitsProcessorFn = Callable[[np.ndarray, np.ndarray], Any]


class Pipeline:
    """The processing of one decoding loop's scores: ``builtin`` processors (fasttx's
    ``processors.Processor``: in place, given the histories and row ids), then ``custom`` (the
    user's ``logits_processor``), then ``constraint`` (a ``processors.Processor`` setting ``-inf``
    on each row's disallowed tokens, in place; None: no constraint)."""

    def __init__(
        self,
        builtin: Sequence[processors.Processor],
        custom: Sequence[LogitsProcessorFn] = (),
        constraint: Optional[processors.Processor] = None,
    ):
        self.builtin = list(builtin)
        self.custom = list(custom)
        self.constraint = constraint

    def __bool__(self) -> bool:
        return bool(self.builtin or self.custom or self.constraint is not None)

    def apply(self, scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> np.ndarray:
        """The processed ``scores`` ``[len(rows), vocab]`` (float32; changed in place, and a new
        array when a custom processor returns one). ``history[i]``: the ids transformers holds in
        ``input_ids`` for row ``rows[i]`` (all of one length)."""
        for p in self.builtin:
            p(scores, history, rows)
        if self.custom:
            input_ids = np.asarray(history, dtype=np.int64).reshape(len(history), -1)
            for i, fn in enumerate(self.custom):
                scores = _checked_output(fn(input_ids, scores), scores.shape, i, fn)
        if self.constraint is not None:
            self.constraint(scores, history, rows)
        return scores


def _checked_output(out: Any, shape: tuple, index: int, fn: Any) -> np.ndarray:
    """A custom processor's result as float32 scores, or a ValueError naming the processor."""
    what = f"logits_processor[{index}] ({_name(fn)})"
    if not isinstance(out, np.ndarray):
        raise ValueError(
            f"{what} returned {type(out).__name__}; it must return the scores as a numpy array "
            f"of shape {shape} (transformers' signature: fn(input_ids, scores) -> scores)"
        )
    if out.shape != shape:
        raise ValueError(f"{what} returned an array of shape {out.shape}; expected {shape} (the scores' shape)")
    if out.dtype.kind != "f":
        raise ValueError(f"{what} returned dtype {out.dtype}; scores must be floating point (float32)")
    out = np.ascontiguousarray(out, dtype=np.float32)
    if np.isnan(out).any() or np.isposinf(out).any():
        raise ValueError(f"{what} returned NaN or +inf scores; ban a token with -inf instead")
    return out


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def token_logprobs(
    native_model, scores: np.ndarray, tokens: Sequence[int], k: int, temperature: Optional[float] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``scores`` (the processed scores its token was chosen from) and its chosen
    token: ``(logprob [rows], top_values [rows, k], top_ids [rows, k])``, the k best best first.
    ``temperature``: the sampling temperature (None when the token was the argmax)."""
    if temperature is not None:
        scores = scores / np.float32(temperature)
    logprobs = np.ascontiguousarray(processors.renormalize(scores), dtype=np.float32)
    rows = logprobs.shape[0]
    chosen = logprobs[np.arange(rows), np.asarray(tokens, dtype=np.int64)]
    if k:  # natively, on the model's threads: a numpy argpartition per row is much slower
        values, ids = native_model.topk_rows(logprobs, k)
    else:
        values, ids = np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)
    return chosen, values, ids


def check_logprobs(value: Any, vocab_size: int) -> Optional[int]:
    """``logprobs``: None (off) or an integer k in [0, vocab]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= vocab_size:
        raise ValueError(f"logprobs must be None or an integer in [0, {vocab_size}], got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# What the calls return
# ---------------------------------------------------------------------------------------------


@dataclass
class OutputRequest:
    """``generate_ids``' transformers switches, given with ``return_dict_in_generate=True``."""

    scores: bool = False  # output_scores
    logits: bool = False  # output_logits

    @property
    def any(self) -> bool:
        return self.scores or self.logits


OUTPUT_KEYS = ("return_dict_in_generate", "output_scores", "output_logits")


def split_output_options(options: dict) -> tuple[dict, Optional[OutputRequest]]:
    """``options`` without transformers' output switches, and what they ask for (None without
    ``return_dict_in_generate``: then ``output_scores`` and ``output_logits`` change nothing, as in
    transformers)."""
    flags = {}
    for key in OUTPUT_KEYS:
        value = options.get(key, False)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{key} must be True or False, got {value!r}")
        flags[key] = bool(value)
    rest = {k: v for k, v in options.items() if k not in OUTPUT_KEYS}
    if not flags["return_dict_in_generate"]:
        return rest, None
    return rest, OutputRequest(scores=flags["output_scores"], logits=flags["output_logits"])


@dataclass
class GenerateOutput:
    """``generate_ids(..., return_dict_in_generate=True)``: transformers' ``GenerateDecoderOnlyOutput``
    / ``GenerateBeamDecoderOnlyOutput`` (and their encoder-decoder forms) in numpy.

    ``sequences``: what ``generate_ids`` returns (new tokens per sequence); ``scores`` (with
    ``output_scores``): one float32 ``[batch * beams_or_sequences, vocab]`` array per step, the
    processed scores (sampling: after the warpers too; beam search: the processed
    log-probabilities, before the beams' running scores are added); ``logits`` (with
    ``output_logits``): the raw logits per step; ``sequences_scores`` (beam search with
    ``output_scores``): float32 ``[batch * num_return_sequences]``, each hypothesis' score with the
    length penalty; ``finish_reasons``: ``"stop"`` or ``"length"`` per sequence."""

    sequences: list[list[int]]
    finish_reasons: list[str]
    scores: Optional[tuple[np.ndarray, ...]] = None
    logits: Optional[tuple[np.ndarray, ...]] = None
    sequences_scores: Optional[np.ndarray] = None

    def __getitem__(self, key: str):  # transformers' outputs are read as out["sequences"] too
        if key not in ("sequences", "scores", "logits", "sequences_scores", "finish_reasons"):
            raise KeyError(key)
        return getattr(self, key)


@dataclass
class Recording:
    """What a generation keeps beside its tokens (None: not asked for): the per-step arrays of a
    ``GenerateOutput``, and for ``logprobs=k`` each row's ``(logprob, top values, top ids)`` per
    token. The decoding code fills ``sequences_scores`` (beam search) and ``finish_reasons``."""

    scores: Optional[list[np.ndarray]] = None
    logits: Optional[list[np.ndarray]] = None
    logprobs_k: Optional[int] = None
    token_logprobs: dict[int, list[tuple[float, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    sequences_scores: Optional[np.ndarray] = None
    finish_reasons: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, request: OutputRequest) -> "Recording":
        return cls(scores=[] if request.scores else None, logits=[] if request.logits else None)

    @property
    def keeps_all_rows(self) -> bool:
        """Per-step arrays cover every row at every step, as transformers' do."""
        return self.scores is not None or self.logits is not None

    def output(self, sequences: list[list[int]]) -> GenerateOutput:
        return GenerateOutput(
            sequences=sequences,
            finish_reasons=list(self.finish_reasons),
            scores=tuple(self.scores) if self.scores is not None else None,
            logits=tuple(self.logits) if self.logits is not None else None,
            sequences_scores=self.sequences_scores,
        )


@dataclass
class GeneratedText:
    """``generate(..., logprobs=k)``'s result for one sequence: ``text`` as ``generate`` returns
    it; ``token_ids`` the tokens ``generate_ids`` returns (EOS included when it ended the
    sequence; with a stop string, up to the token that completed it) and ``tokens`` each as a text
    piece (special tokens spelled out); ``logprobs`` one float per token; ``top_logprobs`` one
    ``{piece: logprob}`` dict of the k best per token (best first)."""

    text: str
    tokens: list[str]
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    finish_reason: str = "length"

    def __str__(self) -> str:
        return self.text
