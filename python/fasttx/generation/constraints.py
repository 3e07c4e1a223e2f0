"""Constrained output: ``json_schema=``, ``regex=``, ``choices=``, ``grammar=`` (docs/API.md).

The engine is llguidance, in Rust (``fasttx._native.NativeConstraint*``): this module turns the
options into compiled constraints, the tokenizer's vocabulary into the bytes each token id stands
for (what the engine matches against), and gives the decoding loops one object per generation
(``RowConstraints``) that masks a step's scores and follows the chosen tokens.

Semantics (as outlines' and llama.cpp's masks behave):

- a row may only take tokens that keep its text a prefix of a match; EOS is allowed where the
  text is a complete match, and is the only token left once nothing else may follow, so a finished
  constrained row ends with EOS like any other (its ``finish_reason`` is ``"stop"``);
- ``min_new_tokens`` (which forbids EOS) does not keep a complete constraint going: its EOS is
  let through;
- a row cut by the token budget keeps its (incomplete) text, ``finish_reason`` ``"length"``;
- JSON comes on one line with ``json.dumps``' separators (``", "``, ``": "``) unless the schema's
  ``x-guidance`` key says otherwise (llguidance's JSON options).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .._native import NativeConstraint, NativeConstraintEnv, NativeConstraintRows

KINDS = ("json_schema", "regex", "choices", "grammar")

# Compiled constraints kept per model, by their text (a server sees the same schema again and
# again; compiling a large schema takes milliseconds).
COMPILED_CACHE = 64


@dataclass
class ConstraintRequest:
    """The constraint option of one call: its kind and either one spec for every prompt
    (``per_prompt`` False) or one spec (or None) per prompt. Specs are normalised to what the
    engine takes: JSON text for schemas, str for regex and grammar, a tuple of str for choices."""

    kind: str
    specs: list  # one entry, or one per prompt
    per_prompt: bool
    compiled: Optional[list] = None  # NativeConstraint (or None) per entry of specs, once compiled

    def check_prompts(self, n: int) -> None:
        if self.per_prompt and len(self.specs) != n:
            raise ValueError(f"{self.kind} has {len(self.specs)} entries but there are {n} prompts: give one per prompt (or None)")

    def for_inputs(self, inputs: Sequence[int], copies: int) -> list:
        """The compiled constraint of each generated row: ``copies`` rows per input, inputs given
        by their index in the call."""
        assert self.compiled is not None, "compile first"
        if not self.per_prompt:
            return [self.compiled[0]] * (len(inputs) * copies)
        return [self.compiled[i] for i in inputs for _ in range(copies)]


def request_from(options: dict) -> Optional[ConstraintRequest]:
    """The constraint among ``options`` (the call's own options), validated but not compiled;
    None without one. Two constraint options is a ValueError."""
    given = [k for k in KINDS if options.get(k) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give at most one constraint option, got {', '.join(given)}")
    kind = given[0]
    value = options[kind]
    per_prompt = _is_per_prompt(kind, value)
    values = list(value) if per_prompt else [value]
    if per_prompt and not values:
        raise ValueError(f"{kind} is an empty list: give one value (or None) per prompt")
    specs = [None if v is None else _normalised(kind, v) for v in values]
    if all(s is None for s in specs):
        return None
    return ConstraintRequest(kind, specs, per_prompt)


def _is_per_prompt(kind: str, value: Any) -> bool:
    """A list holds one value per prompt, except for ``choices``, whose single value is itself a
    list of strings: there, a list of lists (or Nones) is per prompt."""
    if not isinstance(value, (list, tuple)):
        return False
    if kind == "choices":
        return any(v is None or isinstance(v, (list, tuple)) for v in value)
    return True


def _normalised(kind: str, value: Any):
    if kind == "json_schema":
        return _schema_text(value)
    if kind in ("regex", "grammar"):
        if not isinstance(value, str):
            raise ValueError(f"{kind} must be a str, got {type(value).__name__}")
        if kind == "grammar" and not value.strip():
            raise ValueError("grammar is empty")
        return value
    # choices
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"choices must be a list of strings, got {type(value).__name__}")
    if not value:
        raise ValueError("choices is empty: give at least one string")
    if not all(isinstance(c, str) for c in value):
        raise ValueError("choices must hold strings only")
    return tuple(value)


def _schema_text(value: Any) -> str:
    """A JSON schema as JSON text: a dict, a pydantic model class (its ``model_json_schema()``;
    duck-typed, pydantic is not a dependency), or JSON text."""
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"invalid json_schema: not JSON: {e}") from None
    if isinstance(value, bool):
        return json.dumps(value)
    if not isinstance(value, dict):
        raise ValueError(
            f"json_schema must be a dict, a pydantic model class or JSON text, got {type(value).__name__}"
        )
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid json_schema: {e}") from None


# ---------------------------------------------------------------------------- the vocabulary


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the character a byte is written as -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _decoder_kinds(spec: Any) -> set[str]:
    """The decoder types of a tokenizer.json ``decoder`` (a Sequence lists several)."""
    if not isinstance(spec, dict):
        return set()
    kinds = {spec.get("type")}
    for d in spec.get("decoders") or []:
        kinds |= _decoder_kinds(d)
    return kinds


def vocabulary_bytes(tokenizer, vocab_size: int) -> tuple[list[bytes], list[int]]:
    """The bytes of every token id below ``vocab_size`` (b"" for ids the tokenizer lacks) and the
    ids of its special tokens. Byte-level BPE (GPT-2, Qwen, SmolLM2) spells bytes with its
    alphabet; SentencePiece-style vocabularies write spaces "▁" and raw bytes ``<0xXX>``; added
    tokens are their text."""
    # The decoder alone (the whole tokenizer's JSON is megabytes for a 150k vocabulary).
    decoder = tokenizer.decoder
    kinds = _decoder_kinds(json.loads(decoder.__getstate__())) if decoder is not None else set()
    byte_level = "ByteLevel" in kinds
    sentencepiece = bool(kinds & {"Metaspace", "ByteFallback", "Replace"})
    out = [b""] * vocab_size
    byte_of = _byte_decoder()
    for token, tid in tokenizer.get_vocab(with_added_tokens=False).items():
        if tid >= vocab_size:
            continue
        if byte_level:
            if all(c in byte_of for c in token):
                out[tid] = bytes(byte_of[c] for c in token)
            else:
                out[tid] = token.encode("utf-8")
        elif sentencepiece:
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                try:
                    out[tid] = bytes([int(token[3:5], 16)])
                    continue
                except ValueError:
                    pass
            out[tid] = token.replace("\u2581", " ").encode("utf-8")
        else:
            # Other models (WordPiece, ...): the token's decoded text.
            out[tid] = tokenizer.decode([tid], skip_special_tokens=False).encode("utf-8")
    special = []
    for tid, added in tokenizer.get_added_tokens_decoder().items():
        if tid >= vocab_size:
            continue
        out[tid] = added.content.encode("utf-8")
        if added.special:
            special.append(tid)
    return out, special


class ConstraintCompiler:
    """Per model: the native environment (built on first use, per set of EOS ids) and a cache of
    compiled constraints. Thread-safe (a server compiles its requests' constraints on the
    threads that submit them)."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._lock = threading.Lock()
        self._vocab: Optional[tuple[bytes, list[int], list[int]]] = None
        self._envs: dict[tuple, NativeConstraintEnv] = {}
        self._compiled: dict[tuple, NativeConstraint] = {}

    def env(self, eos: Sequence[int]) -> NativeConstraintEnv:
        with self._lock:
            return self._env(eos)

    def _env(self, eos: Sequence[int]) -> NativeConstraintEnv:
        key = tuple(eos)
        if key not in self._envs:
            if not key:
                raise ValueError("constrained output needs an EOS token id (eos_token_id): a finished row ends with it")
            if self._vocab is None:
                words, special = vocabulary_bytes(self.tokenizer, self.vocab_size)
                self._vocab = (b"".join(words), [len(w) for w in words], special)
            data, lengths, special = self._vocab
            self._envs[key] = NativeConstraintEnv(data, lengths, special, list(key))
        return self._envs[key]

    def compile(self, request: ConstraintRequest, eos: Sequence[int]) -> None:
        """Compiles every spec of ``request`` (a ValueError with the engine's message for an
        invalid one, before anything is generated)."""
        with self._lock:
            request.compiled = self._compile(request, eos)

    def _compile(self, request: ConstraintRequest, eos: Sequence[int]) -> list:
        env = self._env(eos)
        compiled = []
        for spec in request.specs:
            if spec is None:
                compiled.append(None)
                continue
            key = (tuple(eos), request.kind, spec)
            c = self._compiled.get(key)
            if c is None:
                c = env.compile(request.kind, list(spec) if request.kind == "choices" else spec)
                if len(self._compiled) >= COMPILED_CACHE:
                    self._compiled.pop(next(iter(self._compiled)))
                self._compiled[key] = c
            compiled.append(c)
        return compiled


class RowConstraints:
    """The constraint state of a generation's rows, for the decoding loops: ``mask`` a step's
    scores, then ``consume`` the chosen tokens; ``reorder`` follows the session's rows (beams)."""

    def __init__(
        self,
        compiled_per_row: Sequence[Optional[NativeConstraint]],
        native_model=None,
        *,
        strict: bool = True,
        passthrough: Sequence[int] = (),
    ):
        # `passthrough`: forced BOS/EOS ids (see NativeConstraintRows): a translation's forced
        # language token is not text the constraint sees.
        self.rows = NativeConstraintRows(list(compiled_per_row), list(passthrough))
        self.native_model = native_model
        self.strict = strict  # beam search: False (see `mask`)
        self.steps = 0

    def __call__(self, scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        """The score pipeline's last processor (generation/scores.py): ``mask`` in place."""
        self.mask(scores, rows, self.steps, strict=self.strict)
        self.steps += 1

    def mask(self, scores: np.ndarray, rows: Sequence[int], step: int, *, strict: bool = True) -> None:
        """Sets to -inf, in place, the scores (``[len(rows), vocab]``) of tokens each row's
        constraint forbids. ``strict``: a constrained row left without any possible token (other
        options forbade every token the constraint allows) is a ValueError; beam search passes
        False, a beam without continuation just drops out."""
        target = scores
        if not (scores.dtype == np.float32 and scores.flags.c_contiguous and scores.flags.writeable):
            target = np.ascontiguousarray(scores, dtype=np.float32)
        ok = self.rows.mask(target, list(rows), self.native_model)
        if target is not scores:
            scores[...] = target
        if strict and not all(ok):
            row = rows[ok.index(False)]
            raise ValueError(
                f"at step {step}, row {row}: no token can continue the constraint: the other "
                "generation options (bad_words_ids, forced tokens, ...) forbid every token it "
                "allows, or the vocabulary cannot spell what it requires"
            )

    def consume(self, rows: Sequence[int], tokens: Sequence[int], *, strict: bool = True) -> list[bool]:
        """Advances each row past its chosen token; returns per row whether its constraint is
        complete. ``strict=False`` (beam search): a beam whose token breaks its constraint (a
        dropped beam's filler) ends up with nothing allowed instead of raising."""
        return self.rows.consume(list(rows), [int(t) for t in tokens], strict)

    def reorder(self, index: Sequence[int]) -> None:
        self.rows.reorder([int(i) for i in index])
