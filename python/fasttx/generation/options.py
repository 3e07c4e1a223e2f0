"""Generation options: transformers' ``GenerationConfig`` names and defaults, validated once.

Precedence, as in transformers: an option passed to the call, else the model's generation config
(``generation_config.json``, or generation keys of ``config.json``), else transformers' default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .constraints import ConstraintRequest, request_from

# transformers.GenerationConfig defaults for the options fasttx understands.
HF_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "eos_token_id": None,
    "pad_token_id": None,
    "bos_token_id": None,
    "decoder_start_token_id": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "bad_words_ids": None,
    "renormalize_logits": False,
    "seed": None,
    "stop": None,
    "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None,
    # Constrained output (generation/constraints.py): fasttx's own, at most one per call.
    "json_schema": None,
    "regex": None,
    "choices": None,
    "grammar": None,
    "logits_processor": None,
}

GENERATION_KEYS = frozenset(HF_DEFAULTS)

# Options only a call gives (Python objects, not generation-config values): a generation config
# naming them is ignored for them.
CALL_ONLY_KEYS = frozenset({"logits_processor"})

# GenerationConfig keys that change what transformers' generate() returns and that fasttx does not
# implement, with the values that switch each off (transformers' defaults). A generation config
# setting one otherwise is reported when the model loads (`ignored_generation_keys`): fasttx then
# generates as if it were off.
UNSUPPORTED_KEYS: dict[str, tuple] = {
    "typical_p": (1.0,),
    "epsilon_cutoff": (0.0,),
    "eta_cutoff": (0.0,),
    "top_h": (),
    "encoder_repetition_penalty": (1.0,),
    "encoder_no_repeat_ngram_size": (0,),
    "exponential_decay_length_penalty": (),
    "suppress_tokens": (),
    "begin_suppress_tokens": (),
    "sequence_bias": (),
    "guidance_scale": (1.0,),
    "remove_invalid_values": (False,),
    "token_healing": (False,),
    "watermarking_config": (),
    "max_time": (),
    "stop_strings": (),
    "penalty_alpha": (),
    "dola_layers": (),
    "diversity_penalty": (0.0,),
    "num_beam_groups": (1,),
    "constraints": (),
    "force_words_ids": (),
}

# The smallest normal float32 (numpy's finfo(float32).tiny): the least temperature sampling takes.
FLOAT32_TINY = 1.1754943508222875e-38


@dataclass
class GenerationOptions:
    """Resolved options for one generate call (see ``resolve``)."""

    max_length: int = 20
    max_new_tokens: Optional[int] = None
    min_length: int = 0
    min_new_tokens: Optional[int] = None
    do_sample: bool = False
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    temperature: float = 1.0
    top_k: Optional[int] = 50
    top_p: float = 1.0
    min_p: Optional[float] = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    decoder_start_token_id: Optional[int] = None
    forced_bos_token_id: Optional[int] = None
    forced_eos_token_id: Optional[list[int]] = None  # None: off (an empty list is refused)
    bad_words_ids: Optional[list[list[int]]] = None  # as given (EOS-only bans are dropped by `build`)
    renormalize_logits: bool = False
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    # Prompt-lookup decoding (generation/prompt_lookup.py): draft tokens per step (None: off) and
    # the longest n-gram matched (None: transformers' 2).
    prompt_lookup_num_tokens: Optional[int] = None
    max_matching_ngram_size: Optional[int] = None
    # Constrained output: the call's json_schema/regex/choices/grammar (compiled by the Model).
    constraint: Optional[ConstraintRequest] = None
    # The user's callables fn(input_ids, scores) -> scores, run after the built-in processors
    # (generation/scores.py).
    logits_processor: list = field(default_factory=list)
    # Neither the call nor the generation config set max_length: transformers' default 20 then
    # means 20 *new* tokens (its `has_default_max_length`).
    default_max_length: bool = False

    def new_token_budget(self, prompt_len: int, max_positions: Optional[int] = None) -> int:
        """How many tokens may be generated after a (decoder) prompt of ``prompt_len`` tokens,
        by transformers' ``_prepare_generated_length`` rules."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        total = self.max_length
        if self.default_max_length:  # "by default let's always generate 20 new tokens"
            total = self.max_length + prompt_len
            if max_positions:
                total = min(total, max_positions)
        return max(0, total - prompt_len)


def ignored_generation_keys(source: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a generation config (``generation_config.json``, or ``config.json``'s
    generation keys) that would change transformers' output and that fasttx does not implement."""
    return {
        k: v
        for k, v in source.items()
        if k in UNSUPPORTED_KEYS and v is not None and v not in UNSUPPORTED_KEYS[k] and v != []
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or _is_numpy_int(v)


def _is_numpy_int(v: Any) -> bool:
    try:
        import numpy as np

        return isinstance(v, np.integer)
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False


def _int(name: str, v: Any, minimum: int, allow_none: bool = False) -> Optional[int]:
    if v is None and allow_none:
        return None
    if not _is_int(v) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _float(
    name: str, v: Any, minimum: Optional[float] = None, exclusive: bool = False, finite: bool = False
) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not _is_numpy_number(v):
        raise ValueError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"{name} must be a finite number, got {v!r}") from None
    if f != f:
        raise ValueError(f"{name} must be a number, got NaN")
    if finite and f in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if minimum is not None and (f < minimum or (exclusive and f == minimum)):
        op = ">" if exclusive else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {v!r}")
    return f


def _is_numpy_number(v: Any) -> bool:
    try:
        import numpy as np

        return isinstance(v, (np.integer, np.floating))
    except ImportError:  # pragma: no cover
        return False


def _token_list(name: str, v: Any) -> list[int]:
    if v is None:
        return []
    items = [v] if _is_int(v) else v
    if not isinstance(items, (list, tuple)) or not all(_is_int(t) and int(t) >= 0 for t in items):
        raise ValueError(f"{name} must be a token id or a list of token ids, got {v!r}")
    return [int(t) for t in items]


def _forced_eos(v: Any) -> Optional[list[int]]:
    """``forced_eos_token_id``: None (off), an id or a list of ids. transformers'
    ``ForcedEOSTokenLogitsProcessor`` refuses negative ids, and an empty list (a float tensor)."""
    if v is None:
        return None
    items = [v] if _is_int(v) else v
    if not isinstance(items, (list, tuple)) or not items or not all(_is_int(t) and int(t) >= 0 for t in items):
        raise ValueError(f"`forced_eos_token_id` has to be a token id or a non-empty list of them (>= 0), got {v!r}")
    return [int(t) for t in items]


def _bad_words(v: Any, eos: Sequence[int], vocab_size: int) -> Optional[list[list[int]]]:
    """``bad_words_ids`` checked as transformers' ``NoBadWordsLogitsProcessor`` checks it (when
    ``generate`` builds it, i.e. before any token is generated), same conditions, same messages."""
    if v is None:
        return None
    if not isinstance(v, list) or len(v) == 0:
        raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {v!r}.")
    if any(not isinstance(seq, list) for seq in v):
        raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {v!r}.")
    if any(not _is_int(t) or int(t) < 0 for seq in v for t in seq):
        raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is {v!r}.")
    seqs = [[int(t) for t in seq] for seq in v]
    # transformers drops single-token bans of an EOS id (even if nothing is left) before checking
    # the ids against the vocabulary; an empty sequence bans nothing.
    kept = [s for s in seqs if not (len(s) == 1 and s[0] in eos)]
    outside = [t for s in kept for t in s if t >= vocab_size]
    if outside:
        raise ValueError(
            f"The model vocabulary size is {vocab_size}, but the following tokens were being biased "
            f"(bad_words_ids): {outside}"
        )
    return seqs


def check_logits_processor(value: Any) -> list[Callable]:
    """``logits_processor``: None, or a list (or tuple, or transformers' ``LogitsProcessorList``)
    of callables ``fn(input_ids, scores) -> scores``."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        hint = ": wrap it in a list" if callable(value) else ""
        raise ValueError(
            "logits_processor must be a list of callables fn(input_ids, scores) -> scores, got "
            f"{type(value).__name__}{hint}"
        )
    for i, fn in enumerate(value):
        if not callable(fn):
            raise ValueError(f"logits_processor[{i}] is not callable: {fn!r}")
    return list(value)


def resolve(
    user: Mapping[str, Any],
    model_defaults: Mapping[str, Any],
    vocab_size: int,
) -> GenerationOptions:
    """Validates ``user`` options and fills the rest from the model's generation config."""
    unknown = sorted(set(user) - GENERATION_KEYS)
    if unknown:
        raise ValueError(
            f"unknown generation option(s) {', '.join(map(repr, unknown))}; "
            f"fasttx accepts: {', '.join(sorted(GENERATION_KEYS))}"
        )
    merged: dict[str, Any] = dict(HF_DEFAULTS)
    merged.update({k: v for k, v in model_defaults.items() if k in GENERATION_KEYS and k not in CALL_ONLY_KEYS})
    merged.update(user)

    o = GenerationOptions()
    o.max_length = _int("max_length", merged["max_length"], 0)
    o.default_max_length = "max_length" not in user and model_defaults.get("max_length") is None
    o.max_new_tokens = _int("max_new_tokens", merged["max_new_tokens"], 0, allow_none=True)
    o.min_length = _int("min_length", merged["min_length"] or 0, 0)
    o.min_new_tokens = _int("min_new_tokens", merged["min_new_tokens"], 0, allow_none=True)
    o.do_sample = bool(merged["do_sample"])
    o.num_beams = _int("num_beams", merged["num_beams"], 1)
    o.num_return_sequences = _int("num_return_sequences", merged["num_return_sequences"], 1)
    # An infinite penalty scores every finished hypothesis -inf (or 0): beam search would return
    # nothing. Finite values too large for the hypotheses' lengths are refused by beam search.
    o.length_penalty = _float("length_penalty", merged["length_penalty"], finite=True)
    es = merged["early_stopping"]
    if es not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {es!r}")
    o.early_stopping = es
    o.temperature = _float("temperature", merged["temperature"], 0.0, exclusive=o.do_sample)
    if o.do_sample and o.temperature < FLOAT32_TINY:
        # Sampling divides float32 scores by the temperature: a subnormal (or, in float32, zero)
        # temperature turns them into infinities and the draw into NaN.
        raise ValueError(
            f"temperature must be at least {FLOAT32_TINY:.9g} (the smallest normal float32) when "
            f"sampling, got {o.temperature!r}; for greedy decoding set do_sample=False"
        )
    o.top_k = _int("top_k", merged["top_k"], 0, allow_none=True)
    o.top_p = _float("top_p", merged["top_p"], 0.0)
    if o.top_p > 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {o.top_p}")
    if merged["min_p"] is not None:
        o.min_p = _float("min_p", merged["min_p"], 0.0)
        if o.min_p > 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {o.min_p}")
    o.repetition_penalty = _float("repetition_penalty", merged["repetition_penalty"], 0.0, exclusive=True)
    o.no_repeat_ngram_size = _int("no_repeat_ngram_size", merged["no_repeat_ngram_size"] or 0, 0)
    o.eos_token_id = _token_list("eos_token_id", merged["eos_token_id"])
    for name in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        v = merged[name]
        if isinstance(v, (list, tuple)):  # some configs list several; transformers uses the first
            v = v[0] if v else None
        setattr(o, name, _int(name, v, 0, allow_none=True))
    o.forced_bos_token_id = _int("forced_bos_token_id", merged["forced_bos_token_id"], 0, allow_none=True)
    o.forced_eos_token_id = _forced_eos(merged["forced_eos_token_id"])
    o.bad_words_ids = _bad_words(merged["bad_words_ids"], o.eos_token_id, vocab_size)
    if not isinstance(merged["renormalize_logits"], bool):
        raise ValueError(f"renormalize_logits must be True or False, got {merged['renormalize_logits']!r}")
    o.renormalize_logits = merged["renormalize_logits"]
    o.seed = _int("seed", merged["seed"], 0, allow_none=True)
    # transformers refuses both below 1 ("Invalid max_matching_ngram_size or num_output_tokens"),
    # except that it reads a max_matching_ngram_size of 0 as unset (`or 2`).
    o.prompt_lookup_num_tokens = _int(
        "prompt_lookup_num_tokens", merged["prompt_lookup_num_tokens"], 1, allow_none=True
    )
    ngram = merged["max_matching_ngram_size"]
    o.max_matching_ngram_size = _int("max_matching_ngram_size", None if ngram == 0 else ngram, 1, allow_none=True)
    o.logits_processor = check_logits_processor(merged["logits_processor"])
    stop = merged["stop"]
    if stop is None:
        o.stop = []
    elif isinstance(stop, str):
        o.stop = [stop]
    elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) and s for s in stop):
        o.stop = list(stop)
    else:
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    if any(s == "" for s in o.stop):
        raise ValueError("stop strings must not be empty")
    # Only the call's own constraint: a generation config cannot carry one.
    o.constraint = request_from(user)

    for name in ("eos_token_id",):
        bad = [t for t in o.eos_token_id if t >= vocab_size]
        if bad:
            raise ValueError(f"{name} {bad[0]} is outside the vocabulary of {vocab_size}")
    for name in ("pad_token_id", "decoder_start_token_id", "forced_bos_token_id"):
        v = getattr(o, name)
        if v is not None and v >= vocab_size:
            raise ValueError(f"{name} {v} is outside the vocabulary of {vocab_size}")
    bad = [t for t in o.forced_eos_token_id or [] if t >= vocab_size]
    if bad:
        raise ValueError(f"forced_eos_token_id {bad[0]} is outside the vocabulary of {vocab_size}")
    if o.num_beams > 1:
        if o.num_return_sequences > o.num_beams:
            raise ValueError(
                f"num_return_sequences ({o.num_return_sequences}) must be <= num_beams ({o.num_beams})"
            )
    elif o.num_return_sequences > 1 and not o.do_sample:
        raise ValueError(
            "greedy search returns one sequence per input: num_return_sequences > 1 needs num_beams or do_sample"
        )
    return o


def option_names() -> Sequence[str]:
    return [f.name for f in fields(GenerationOptions)]
