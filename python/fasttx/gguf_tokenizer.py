"""The tokenizer a GGUF file describes, rebuilt as a ``tokenizers.Tokenizer``.

A GGUF has no ``tokenizer.json``: it stores the vocabulary, scores, token types, merges and special
token ids as metadata under llama.cpp's key names (``tokenizer.ggml.*``). transformers turns those
into a fast tokenizer (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``, code in
``transformers/integrations/gguf/gguf_tokenizer_mapping.py``); this module builds the same pipeline
without transformers, so that fasttx encodes and decodes exactly as transformers does for the same
file. That is also what makes generation match: the prompt ids must be identical.

What transformers (5.x) builds, and so what is reproduced here:

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE (GPT-2's pipeline). Tokens not written in the
  byte alphabet are re-spelled through it. The pre-tokenizer is ``ByteLevel`` with GPT-2's split
  regex unless ``tokenizer.ggml.pre`` names a known family (llama3, qwen2, gpt-4o, ...), which gets
  that family's split regex. Unknown names (SmolLM2's ``smollm`` among them) keep GPT-2's.
* ``tokenizer.ggml.model == "llama"``: SentencePiece-style BPE with byte fallback (``<0xNN>``
  tokens), a ``Metaspace`` pre-tokenizer that prepends "▁" to the first word only, and merges taken
  from the file or, as usual for these files, derived from the token scores. ``add_space_prefix`` is
  not consulted: transformers always prepends.
* ``llama`` files of Gemma's architectures (``gemma``, ``gemma2``, ``gemma3``): Gemma's tokenizer
  (transformers' ``GemmaTokenizer``): no prefix space, spaces written "▁" by a normalizer, a
  ``Split(" ")`` pre-tokenizer, no ``Strip`` in the decoder. The file spells its whitespace-run
  tokens with real spaces, which are re-spelled "▁..." first, and the merges are derived with the
  tokens' file positions as their scores (Gemma's scores do not follow its merge order).
* Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
  tokens, then the named special tokens (bos/eos/unk/pad) are added if still missing; the
  post-processor adds BOS/EOS as ``add_bos_token``/``add_eos_token`` say (``llama`` files without
  the flag add BOS, like llama.cpp).

Input is the metadata dict (``fasttx._native.gguf_metadata(path)``: keys as in the file, arrays as
sequences: lists, numpy arrays or lazy views), so neither the ``gguf`` package nor transformers is
needed at run time. The file may come from anyone: every value is checked for its kind before use,
and whatever the tokenizers library refuses to build is reported as a ``ModelFormatError`` too.
"""

from __future__ import annotations

import operator
from typing import Any, Mapping, Optional, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ._native import ModelFormatError

__all__ = ["tokenizer_from_gguf", "gguf_special_tokens", "SUPPORTED_TOKENIZER_MODELS"]

# The special tokens transformers names, and the metadata keys of their ids (llama.cpp's spelling).
_ID_KEYS = (
    ("bos_token", "bos_token_id"),
    ("eos_token", "eos_token_id"),
    ("unk_token", "unknown_token_id"),
    ("pad_token", "padding_token_id"),
)

# llama.cpp's token types (tokenizer.ggml.token_type).
_CONTROL = 3
_USER_DEFINED = 4

SUPPORTED_TOKENIZER_MODELS = ("gpt2", "llama")

# Architectures whose SentencePiece vocabularies transformers builds as Gemma's (see _gemma).
_GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")

# Split regexes of the byte-level families transformers recognises by `tokenizer.ggml.pre`. These
# are data: they must be character-for-character those transformers uses, or words split differently.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_SPLIT_BY_PRE = {
    **dict.fromkeys(
        (
            "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
            "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe",
        ),
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}  # fmt: skip


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for
    themselves, the other 68 bytes are shifted to U+0100 and up (so a space is "Ġ")."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    shifted = 0x100
    for b in range(256):
        if b not in table:
            table[b] = chr(shifted)
            shifted += 1
    return table


_BYTE_TO_CHAR = _byte_alphabet()
_BYTE_CHARS = frozenset(_BYTE_TO_CHAR.values())


# --------------------------------------------------------------------------------- metadata access


def _array(meta: Mapping[str, Any], key: str) -> Optional[Sequence[Any]]:
    """The metadata array ``key`` (``None`` when absent), refused when the file stores a single
    value there. Any sequence is accepted: arrays may arrive as lists, numpy arrays or lazy views."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (str, bytes, int, float)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        raise ModelFormatError(f"GGUF metadata {key} is a single {type(value).__name__}, not an array")
    return value


def _integers(values: Sequence[Any], key: str) -> list[int]:
    try:
        return [operator.index(v) for v in values]  # ints of any width, numpy's included; not floats
    except TypeError:
        bad = next(v for v in values if not hasattr(v, "__index__"))
        raise ModelFormatError(f"GGUF metadata {key} holds {bad!r}, not an integer") from None


def _floats(values: Sequence[Any], key: str) -> list[float]:
    bad = next((v for v in values if isinstance(v, (str, bytes)) or not hasattr(v, "__float__")), None)
    if bad is not None:
        raise ModelFormatError(f"GGUF metadata {key} holds {bad!r}, not a number")
    return [float(v) for v in values]


def _tokenizer_model(meta: Mapping[str, Any]) -> str:
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise ModelFormatError("GGUF metadata has no tokenizer (tokenizer.ggml.model is missing)")
    if kind not in SUPPORTED_TOKENIZER_MODELS:
        raise ModelFormatError(
            f"GGUF tokenizer.ggml.model {kind!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_TOKENIZER_MODELS)}); "
            "put the model's tokenizer.json next to the .gguf file to use it instead"
        )
    return kind


def _is_gemma(meta: Mapping[str, Any], kind: str) -> bool:
    return kind == "llama" and meta.get("general.architecture") in _GEMMA_ARCHS


def _tokens(meta: Mapping[str, Any]) -> list[str]:
    tokens = _array(meta, "tokenizer.ggml.tokens")
    tokens = [] if tokens is None else list(tokens)
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise ModelFormatError("GGUF metadata tokenizer.ggml.tokens is missing or not a list of strings")
    return tokens


def _token_types(meta: Mapping[str, Any], n_tokens: int) -> list[int]:
    types = _array(meta, "tokenizer.ggml.token_type")
    if types is None:
        return []
    if len(types) != n_tokens:
        raise ModelFormatError(
            f"GGUF metadata tokenizer.ggml.token_type has {len(types)} entries for {n_tokens} tokens"
        )
    return _integers(types, "tokenizer.ggml.token_type")


def _token_id(meta: Mapping[str, Any], key: str, n_tokens: int) -> Optional[int]:
    value = meta.get(f"tokenizer.ggml.{key}")
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__") or not 0 <= operator.index(value) < n_tokens:
        raise ModelFormatError(f"GGUF metadata tokenizer.ggml.{key} = {value!r} is not a token id below {n_tokens}")
    return operator.index(value)


def _special_token_strings(meta: Mapping[str, Any], tokens: Sequence[str]) -> dict[str, Optional[str]]:
    """bos/eos/unk/pad as the token strings the file spells (transformers names them by string)."""
    out = {}
    for name, key in _ID_KEYS:
        tid = _token_id(meta, key, len(tokens))
        out[name] = tokens[tid] if tid is not None else None
    return out


def _add_flags(meta: Mapping[str, Any], kind: str) -> tuple[bool, bool]:
    # A SentencePiece file without the flag gets BOS: llama.cpp does, and transformers follows it.
    return _flag(meta, "tokenizer.ggml.add_bos_token", kind == "llama"), _flag(meta, "tokenizer.ggml.add_eos_token", False)


def _flag(meta: Mapping[str, Any], key: str, default: bool) -> bool:
    value = meta.get(key)
    if value is None:
        return default
    if isinstance(value, (str, bytes, float)) or not hasattr(value, "__index__") or operator.index(value) not in (0, 1):
        raise ModelFormatError(f"GGUF metadata {key} = {value!r} is not a boolean")
    return bool(value)


def gguf_special_tokens(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What generation needs to know about special tokens, as the tokenizer built from the same
    metadata uses them:

    ``bos_token_id``, ``eos_token_id``, ``unk_token_id``, ``pad_token_id`` (``int`` or ``None``, the ids
    the file states), ``bos_token``, ``eos_token``, ``unk_token``, ``pad_token`` (their strings, for chat
    templates), and ``add_bos_token`` / ``add_eos_token`` (whether encoding with special tokens adds
    them; off when the token itself is missing, as in transformers).
    """
    kind = _tokenizer_model(metadata)
    tokens = _tokens(metadata)
    out: dict[str, Any] = {}
    for name, key in _ID_KEYS:
        out[f"{name}_id"] = _token_id(metadata, key, len(tokens))
    out.update(_special_token_strings(metadata, tokens))
    add_bos, add_eos = _add_flags(metadata, kind)
    out["add_bos_token"] = add_bos and out["bos_token"] is not None
    out["add_eos_token"] = add_eos and out["eos_token"] is not None
    return out


# --------------------------------------------------------------------------------- merges


def _merges_from_file(meta: Mapping[str, Any]) -> Optional[list[tuple[str, str]]]:
    merges = _array(meta, "tokenizer.ggml.merges")
    if merges is None:
        return None
    out = []
    for i, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else ()
        if len(parts) != 2:
            raise ModelFormatError(
                f"GGUF metadata tokenizer.ggml.merges[{i}] = {merge!r} is not two tokens separated by a space"
            )
        out.append((parts[0], parts[1]))
    return out


def _merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """Merges implied by a scored vocabulary (SentencePiece files carry no merge list).

    Every token that splits into two tokens of the vocabulary yields a merge, ranked by the token's
    score (best first), ties broken by the longer left then right half, then by file order. The dicts
    are built exactly as transformers builds them (a repeated token keeps its first position in
    the iteration but its last id and score), because these orders decide the ranking.
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    token_scores = dict(zip(tokens, scores))
    candidates = []
    for piece, score in token_scores.items():
        halves = [
            (piece[:cut], piece[cut:], score)
            for cut in range(1, len(piece))
            if piece[:cut] in vocab and piece[cut:] in vocab
        ]
        halves.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        candidates.extend(halves)
    # Python's sort is stable in reverse too, so equal keys keep the order collected above.
    candidates.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in candidates]


def _merges(meta: Mapping[str, Any], tokens: Sequence[str]) -> list[tuple[str, str]]:
    merges = _merges_from_file(meta)
    if merges is not None:
        return merges
    scores = _array(meta, "tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise ModelFormatError(
            "GGUF metadata has neither tokenizer.ggml.merges nor one tokenizer.ggml.scores entry per token"
        )
    return _merges_from_scores(tokens, _floats(scores, "tokenizer.ggml.scores"))


# --------------------------------------------------------------------------------- pipelines


def _byte_level(meta: Mapping[str, Any], tokens: list[str]) -> tuple[Tokenizer, list[str]]:
    """GPT-2 style byte-level BPE; returns the tokenizer and the special tokens its transformers
    class (GPT2Tokenizer) brings by default."""
    # Real tokens are already spelled in the byte alphabet; anything else (a raw space, a symbol
    # outside Latin-1) is re-spelled byte by byte so that it can ever be produced.
    spelled = {
        (token if set(token) <= _BYTE_CHARS else "".join(_BYTE_TO_CHAR[b] for b in token.encode("utf-8"))): index
        for index, token in enumerate(tokens)
    }
    bpe = models.BPE(
        vocab=spelled,
        merges=_merges(meta, tokens),
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
    )
    tok = Tokenizer(bpe)
    pre = meta.get("tokenizer.ggml.pre")
    if pre is not None and not isinstance(pre, str):
        raise ModelFormatError(f"GGUF metadata tokenizer.ggml.pre = {pre!r} is not a string")
    split = _SPLIT_BY_PRE.get(pre) if pre is not None else None
    if split is None:
        # GPT-2's own regex, built into ByteLevel (SmolLM2's "smollm" lands here).
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    return tok, ["<|endoftext|>"]


def _sentencepiece(meta: Mapping[str, Any], tokens: list[str]) -> tuple[Tokenizer, list[str]]:
    """SentencePiece-style BPE (Llama's tokenizer.model family); returns the tokenizer and the
    special tokens its transformers class (LlamaTokenizer) brings by default."""
    vocab = {token: index for index, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=_merges(meta, tokens), fuse_unk=True, byte_fallback=True, dropout=None)
    tok = Tokenizer(bpe)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if meta.get("general.architecture") == "phi3":
        # Phi-3 writes its prefix space with a normalizer instead of Metaspace: "  hi" keeps one
        # more "▁" than Metaspace would give.
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        # "first": only the start of the text gets "▁", not the text after a special token.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(steps + [decoders.Strip(content=" ", left=1, right=0)])
    return tok, ["<s>", "</s>", "<unk>"]


def _gemma_spelling(tokens: Sequence[str]) -> list[str]:
    """Gemma files store a token of spaces only as real spaces; its vocabulary (and transformers)
    spell them "▁"."""
    return ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]


def _gemma(meta: Mapping[str, Any], tokens: list[str]) -> tuple[Tokenizer, list[str]]:
    """Gemma's SentencePiece BPE as transformers' ``GemmaTokenizer`` builds it from the file (its
    vocabulary re-spelled by the caller); returns the tokenizer and the class's default special
    tokens."""
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = _merges_from_file(meta)
    if merges is None:
        # Best first by file position: Gemma's scores do not follow its merge order.
        merges = _merges_from_scores(tokens, [-float(i) for i in range(len(tokens))])
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token="<unk>", byte_fallback=True, dropout=None)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok, ["<unk>", "<bos>", "<eos>", "<pad>", "<mask>"]


def _add_tokens_like_transformers(
    tok: Tokenizer,
    tokens: Sequence[str],
    types: Sequence[int],
    class_defaults: Sequence[str],
    named: Mapping[str, Optional[str]],
    byte_level: bool,
) -> None:
    """Adds tokens in the order transformers does; the order matters where a string is both a
    default and a file token, or is missing from the vocabulary (it then gets the next free id)."""
    # 1. The defaults of the transformers class the file maps to (GPT2Tokenizer: <|endoftext|>;
    #    LlamaTokenizer: <s>, </s>, <unk>), added as special before anything from the file.
    defaults = list(dict.fromkeys(class_defaults))
    tok.add_tokens([AddedToken(t, special=True) for t in defaults])

    # 2. Control tokens -> special. In a byte-level vocabulary a "control" token spelled outside the
    #    byte alphabet is a llama.cpp mislabel; transformers leaves it out.
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types)
        if kind == _CONTROL and (not byte_level or set(t) <= _BYTE_CHARS)
    ]
    if control:
        tok.add_special_tokens(control)

    # 3. User-defined tokens -> plain added tokens, matched whole in text (only those the
    #    vocabulary knows under the same spelling).
    known = tok.get_vocab(with_added_tokens=True)
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, kind in zip(tokens, types)
        if kind == _USER_DEFINED and t in known
    ]
    if user:
        tok.add_tokens(user)

    # 4. The file's bos/eos/unk/pad, where not added yet.
    already = set(_added_contents(tok))
    missing = []
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = named.get(name)
        if value is not None and value not in already and value not in missing:
            missing.append(value)
    if missing:
        tok.add_tokens([AddedToken(t, special=True) for t in missing])


def _added_contents(tok: Tokenizer) -> list[str]:
    return [t.content for t in tok.get_added_tokens_decoder().values()]


def _post_processor(tok: Tokenizer, named: Mapping[str, Optional[str]], add_bos: bool, add_eos: bool):
    bos, eos = named.get("bos_token"), named.get("eos_token")
    add_bos = add_bos and bos is not None
    add_eos = add_eos and eos is not None
    single = " ".join([*([f"{bos}:0"] if add_bos else []), "$A:0", *([f"{eos}:0"] if add_eos else [])])
    pair = " ".join([single, *([f"{bos}:1"] if add_bos else []), "$B:1", *([f"{eos}:1"] if add_eos else [])])
    special = []
    if add_bos:
        special.append((bos, tok.token_to_id(bos)))
    if add_eos:
        special.append((eos, tok.token_to_id(eos)))
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def tokenizer_from_gguf(metadata: Mapping[str, Any]) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` transformers builds from this GGUF metadata.

    ``tok.encode(text).ids`` equals transformers' ``tokenizer(text)["input_ids"]`` (special tokens
    added as the file asks: see :func:`gguf_special_tokens`), and
    ``tok.decode(ids, skip_special_tokens=...)`` equals its ``decode``.

    Raises ``fasttx.ModelFormatError`` (a ``ValueError``) when the metadata holds no usable
    tokenizer or one of a kind not supported.
    """
    try:
        return _build(metadata)
    except ModelFormatError:
        raise
    except Exception as exc:  # the tokenizers library raises bare Exceptions ("Token `x` out of vocabulary")
        raise ModelFormatError(f"the GGUF tokenizer metadata cannot be built into a tokenizer: {exc}") from exc


def _build(metadata: Mapping[str, Any]) -> Tokenizer:
    kind = _tokenizer_model(metadata)
    tokens = _tokens(metadata)
    types = _token_types(metadata, len(tokens))
    named = _special_token_strings(metadata, tokens)
    if kind == "gpt2":
        tok, class_defaults = _byte_level(metadata, tokens)
    elif _is_gemma(metadata, kind):
        # The vocabulary is re-spelled, the added tokens below are not (transformers adds the
        # file's user-defined whitespace tokens only if their file spelling is in the vocabulary:
        # it is not, so they stay ordinary vocabulary entries).
        tok, class_defaults = _gemma(metadata, _gemma_spelling(tokens))
    else:
        tok, class_defaults = _sentencepiece(metadata, tokens)
    _add_tokens_like_transformers(tok, tokens, types, class_defaults, named, byte_level=kind == "gpt2")
    tok.post_processor = _post_processor(tok, named, *_add_flags(metadata, kind))
    return tok
