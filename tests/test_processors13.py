"""The processors translation models rely on (``forced_bos_token_id``, ``forced_eos_token_id``,
``bad_words_ids``, ``renormalize_logits``, ``decoder_start_token_id``), the generation-config
defaults (``num_beams``, ``max_length``, ...), and ``tgt_lang``.

Fixtures: ``scripts/make_processor13_fixtures.py`` (transformers on the tiny ``t5_v1_0`` and
``llama_gqa`` models; see its docstring). ``generate`` cases must give transformers' tokens
exactly; ``scores`` cases (sampling, beam sampling) must give transformers' processed scores;
``invalid`` cases must be refused with a ValueError as transformers refuses them. No torch needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from test_processors import assert_like_transformers

import fasttx
from conftest import FIXTURES
from fasttx.generation import processors
from fasttx.generation.languages import LanguageTokens
from fasttx.generation.options import resolve

DIR = FIXTURES / "processors13"
DOC = json.loads((DIR / "cases.json").read_text())
with np.load(DIR / "scores.npz") as _z:
    ARRAYS = {k: _z[k] for k in _z.files}
GENERATE = DOC["generate"]


@pytest.fixture(scope="module")
def model_for(tmp_path_factory):
    """The fixture model of a case: the committed folder, or a copy whose generation_config.json
    (or config.json's generation keys) the case replaces."""
    cache: dict = {}

    def get(case: dict):
        gen, keys = case.get("generation_config"), case.get("config_keys")
        key = (case["model"], json.dumps(gen, sort_keys=True), json.dumps(keys, sort_keys=True))
        if key not in cache:
            src = FIXTURES / case["model"]
            if gen is None and keys is None:
                path = src
            else:
                path = tmp_path_factory.mktemp("gc")
                shutil.copytree(src, path, dirs_exist_ok=True)
                if gen is not None:
                    (path / "generation_config.json").write_text(json.dumps(gen))
                if keys is not None:
                    (path / "generation_config.json").unlink(missing_ok=True)
                    cfg = json.loads((path / "config.json").read_text())
                    cfg.update(keys)
                    (path / "config.json").write_text(json.dumps(cfg))
            cache[key] = fasttx.load(path, threads=2)
        return cache[key]

    return get


@pytest.mark.parametrize("case", GENERATE, ids=[c["name"] for c in GENERATE])
def test_generate_matches_transformers(case, model_for):
    model = model_for(case)
    got = model.generate_ids(case["input_ids"], **case["options"])
    assert got == case["sequences"], case["name"]


def test_generate_fixture_coverage():
    """Each new option alone and combined, greedy and beam, both model kinds, and defaults from
    both generation_config.json and config.json (guards against a thinner regenerated set)."""
    names = {c["name"] for c in GENERATE}
    for m in ("t5_v1_0", "llama_gqa"):
        for n in ("forced_bos", "forced_eos_max_new", "forced_eos_max_length", "forced_eos_default_length",
                  "bad_words_single", "bad_words_sequences", "bad_words_beam4", "renormalize_beam4",
                  "everything_greedy", "everything_beam3", "forced_eos_beats_min_new_tokens",
                  "forced_eos_beats_forced_bos"):  # fmt: skip
            assert f"{m}/{n}" in names, (m, n)
    assert any("config_keys" in c for c in GENERATE)
    gc = [c["generation_config"] for c in GENERATE if "generation_config" in c]
    for key in ("num_beams", "max_length", "min_length", "no_repeat_ngram_size", "length_penalty",
                "early_stopping", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
                "renormalize_logits", "min_new_tokens"):  # fmt: skip
        assert any(key in g for g in gc), key
    assert any(c["options"].get("num_return_sequences", 1) > 1 for c in GENERATE)


# --------------------------------------------------------------------------------------------
# Processed scores: sampling's distribution, beam sampling, renormalization


def fasttx_scores(model, case: dict, scores: np.ndarray) -> np.ndarray:
    """``scores`` through the processors as search.py applies them (then the warpers when sampling,
    then the renormalization beam search applies)."""
    options = dict(case["options"])
    beam = options.pop("num_beams", 1) > 1
    opts = resolve(options, model.generation_config, model.vocab_size)
    p0 = case["prompt_len"]
    budget = opts.new_token_budget(p0, model.max_positions)
    rows = len(case["history"])
    procs = processors.build(opts, p0, case["padding"], p0 + budget)
    processors.apply_all(procs, scores, case["history"], list(range(rows)))
    if opts.do_sample:
        scores = np.asarray(model._native.warp_rows(np.ascontiguousarray(scores), *processors.warpers(opts, beam=beam)))
    if beam and opts.renormalize_logits:
        scores = processors.renormalize(scores)
    return scores


@pytest.mark.parametrize("case", DOC["scores"], ids=[c["name"] for c in DOC["scores"]])
def test_scores_match_transformers(case, load_fixture_model):
    model = load_fixture_model(case["model"])
    got = fasttx_scores(model, case, ARRAYS[f"in/{case['name']}"].copy())
    assert_like_transformers(got, ARRAYS[f"out/{case['name']}"], [], where=case["name"])


def test_score_fixture_coverage():
    hf = " ".join(n for c in DOC["scores"] for n in c["hf"])
    for name in ("NoBadWordsLogitsProcessor", "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor",
                 "LogitNormalization", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper"):  # fmt: skip
        assert name in hf, name


# --------------------------------------------------------------------------------------------
# Refused options


@pytest.mark.parametrize("case", DOC["invalid"], ids=[json.dumps(c["options"]) for c in DOC["invalid"]])
def test_invalid_options_are_value_errors(case, load_fixture_model):
    model = load_fixture_model(case["model"])
    with pytest.raises(ValueError):
        model.generate_ids([[5, 6, 1]], max_new_tokens=3, **case["options"])


@pytest.mark.parametrize(
    "options",
    [
        {"bad_words_ids": ((3,),)},  # transformers wants lists, as GenerationConfig stores them
        {"forced_bos_token_id": 400},
        {"forced_bos_token_id": -1},
        {"forced_eos_token_id": 400},
        {"forced_eos_token_id": [1, 2.0]},
        {"renormalize_logits": "yes"},
    ],
)
def test_more_invalid_options(options, load_fixture_model):
    with pytest.raises(ValueError, match=next(iter(options))):
        load_fixture_model("t5_v1_0").generate_ids([[5, 6, 1]], max_new_tokens=3, **options)


def test_bans_that_ban_nothing_are_accepted(load_fixture_model):
    """As in transformers: an EOS-only ban is dropped, an empty sequence bans nothing."""
    m = load_fixture_model("t5_v1_0")
    plain = m.generate_ids([[5, 6, 1]], max_new_tokens=4)
    assert m.generate_ids([[5, 6, 1]], max_new_tokens=4, bad_words_ids=[[1], []]) == plain


# --------------------------------------------------------------------------------------------
# Sampling with the new processors: what the distribution guarantees, seeded


@pytest.mark.parametrize("beams", [1, 2])
def test_sampling_respects_forced_tokens_and_bans(load_fixture_model, beams):
    m = load_fixture_model("t5_v1_0")
    ban_single, ban_pair = 352, (80, 34)
    opts = dict(do_sample=True, top_k=0, max_new_tokens=6, forced_bos_token_id=80, forced_eos_token_id=1,
                bad_words_ids=[[ban_single], list(ban_pair)], num_beams=beams, renormalize_logits=True)  # fmt: skip
    prompts = [[5, 6, 7, 1], [40, 41, 42, 43, 1], [9, 1]]
    for seed in range(20):
        out = m.generate_ids(prompts, seed=seed, **opts)
        assert out == m.generate_ids(prompts, seed=seed, **opts)
        for seq in out:
            assert seq[0] == 80  # forced BOS, though (80, 34) may not follow it
            assert seq[-1] == 1 and len(seq) <= 6  # EOS by the model, or forced at the last step
            assert ban_single not in seq
            assert all((a, b) != ban_pair for a, b in zip(seq, seq[1:]))


# --------------------------------------------------------------------------------------------
# Generation-config defaults


def _copy_with_generation_config(tmp_path, gen: dict):
    shutil.copytree(FIXTURES / "t5_v1_0", tmp_path, dirs_exist_ok=True)
    (tmp_path / "generation_config.json").write_text(json.dumps(gen))
    return tmp_path


def test_unimplemented_generation_setting_is_reported(tmp_path):
    """A generation config asking for something fasttx does not implement is not ignored silently."""
    path = _copy_with_generation_config(tmp_path, {"decoder_start_token_id": 0, "eos_token_id": 1, "typical_p": 0.9,
                                                   "suppress_tokens": [5], "remove_invalid_values": False})  # fmt: skip
    with pytest.warns(UserWarning, match="typical_p=0.9.*suppress_tokens") as record:
        fasttx.load(path)
    assert "remove_invalid_values" not in str(record[0].message)  # its default: nothing ignored


def test_neutral_generation_settings_load_quietly(tmp_path):
    path = _copy_with_generation_config(tmp_path, {"decoder_start_token_id": 0, "eos_token_id": 1, "typical_p": 1.0,
                                                   "num_beam_groups": 1, "suppress_tokens": None, "use_cache": True,
                                                   "renormalize_logits": True, "bad_words_ids": [[3]]})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fasttx.load(path)
    assert m.generation_config["renormalize_logits"] is True and m.generation_config["bad_words_ids"] == [[3]]


# --------------------------------------------------------------------------------------------
# tgt_lang


def _translation_model(tmp_path, languages: list[str], marian: list[str] = (), words=("de", "fr")):
    """t5_v1_0 with a word-level tokenizer holding ``languages`` as special tokens (M2M100,
    NLLB and mBART keep theirs so) and ``marian`` tokens (``>>xx<<``) as plain vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers import processors as tp

    plain = ["<pad>", "</s>", "<unk>", "hello", "world", "the", "house", *words, *marian]
    vocab = {w: i for i, w in enumerate(plain)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tp.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>", *languages])
    shutil.copytree(FIXTURES / "t5_v1_0", tmp_path, dirs_exist_ok=True)
    tok.save(str(tmp_path / "tokenizer.json"))
    return fasttx.load(tmp_path, threads=2)


def _id(model, token: str) -> int:
    return model.tokenizer.token_to_id(token)


LANGS = ["__de__", "__fr__", "deu_Latn", "zho_Hans", "zho_Hant", "de_DE", "fr_XX", "en_XX"]


@pytest.mark.parametrize(
    "code,token",
    [
        ("__de__", "__de__"),  # exact, as the family spells it
        ("deu_Latn", "deu_Latn"),
        ("de_DE", "de_DE"),
        ("de", "__de__"),  # bare code: M2M100's form first; the plain word piece "de" is no language
        ("fr", "__fr__"),
        ("deu", "deu_Latn"),  # NLLB's code_Script
        ("en", "en_XX"),  # mBART's code_REGION
    ],
)
def test_tgt_lang_lookup(tmp_path, code, token):
    m = _translation_model(tmp_path, LANGS)
    assert LanguageTokens(m.tokenizer).lookup(code).id == _id(m, token)


def test_tgt_lang_is_forced_bos(tmp_path):
    m = _translation_model(tmp_path, LANGS)
    lang = _id(m, "de_DE")
    ids = m.tokenizer.encode("hello world").ids
    expect = m.generate_ids([ids], max_new_tokens=4, forced_bos_token_id=lang)
    assert expect[0][0] == lang
    assert m.generate("hello world", tgt_lang="de_DE", max_new_tokens=4) == m._decode(expect[0])
    assert m.generate(["hello world"], tgt_lang="de_DE", max_new_tokens=4) == [m._decode(expect[0])]
    assert "".join(m.stream("hello world", tgt_lang="de_DE", max_new_tokens=4)) == m._decode(expect[0])
    # the same id given twice is no contradiction; another one is
    both = m.generate("hello world", tgt_lang="de_DE", forced_bos_token_id=lang, max_new_tokens=4)
    assert both == m._decode(expect[0])
    with pytest.raises(ValueError, match="contradicts"):
        m.generate("hello world", tgt_lang="de_DE", forced_bos_token_id=_id(m, "fr_XX"))


def test_tgt_lang_overrides_the_generation_config(tmp_path):
    m = _translation_model(tmp_path, LANGS)
    m.generation_config["forced_bos_token_id"] = _id(m, "fr_XX")  # e.g. a checkpoint's default language
    ids = m.tokenizer.encode("the house").ids
    expect = m.generate_ids([ids], max_new_tokens=3, forced_bos_token_id=_id(m, "__de__"))
    assert m.generate("the house", tgt_lang="de", max_new_tokens=3) == m._decode(expect[0])


def test_marian_target_token_goes_in_the_source(tmp_path):
    """Multilingual Marian picks the language from a ``>>xx<<`` token at the start of the source,
    as ``tokenizer(">>fr<< text")`` gives it in transformers: no forced BOS."""
    m = _translation_model(tmp_path, [], marian=[">>fr<<", ">>de<<"])
    want = m.generate(">>fr<< hello world", max_new_tokens=5)
    assert m.generate("hello world", tgt_lang="fr", max_new_tokens=5) == want
    assert m.generate("hello world", tgt_lang=">>fr<<", max_new_tokens=5) == want
    assert "".join(m.stream("hello world", tgt_lang="fr", max_new_tokens=5)) == want
    de = m.generate(">>de<< hello world", max_new_tokens=5)
    assert m.generate("hello world", tgt_lang="de", max_new_tokens=5) == de


def test_tgt_lang_errors(tmp_path):
    m = _translation_model(tmp_path, LANGS)
    with pytest.raises(ValueError, match=r"ambiguous.*zho_Hans.*zho_Hant"):
        m.generate("hello", tgt_lang="zho")
    with pytest.raises(ValueError, match=r"close matches: \[.*'deu_Latn'"):
        m.generate("hello", tgt_lang="dex")
    with pytest.raises(ValueError, match="tgt_lang"):
        m.generate("hello", tgt_lang="")
    plain = _translation_model(tmp_path / "plain", [])
    with pytest.raises(ValueError, match="no language tokens"):
        plain.generate("hello", tgt_lang="de")


def test_tgt_lang_needs_an_encoder_decoder(load_fixture_model):
    with pytest.raises(ValueError, match="decoder-only"):
        load_fixture_model("llama_gqa").generate("hello", tgt_lang="de")


def test_tgt_lang_is_not_a_token_level_option(load_fixture_model):
    with pytest.raises(ValueError, match="tgt_lang"):
        load_fixture_model("t5_v1_0").generate_ids([[5, 1]], tgt_lang="de")


def test_cli_tgt_lang(tmp_path):
    m = _translation_model(tmp_path, LANGS)
    want = m.generate("hello world", tgt_lang="de", max_new_tokens=4)
    proc = subprocess.run(
        [sys.executable, "-m", "fasttx", "generate", "--model", str(tmp_path), "--tgt-lang", "de",
         "--max-new-tokens", "4", "--no-stream", "hello world"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want + "\n"
