#!/usr/bin/env python3
"""Generate the committed BART-family parity fixtures (BART, mBART, Marian, M2M100/NLLB) under
``tests/fixtures/``.

Each fixture is a tiny seeded random model saved by transformers as a Hugging Face directory,
with a tokenizer built here (no Hub access) and saved by the family's own tokenizer class, plus
transformers' reference outputs (``expected.json`` and ``logits.npz``, the layout of
``scripts/make_fixtures.py``; tests/test_seq2seq.py reads them).

The knobs vary between fixtures so that wrong code fails somewhere:

* ``bart``: post-norm, learned positions (offset 2), ``layernorm_embedding``, gelu, tied head,
  nonzero ``final_logits_bias``, encoder 2 layers x 4 heads x ffn 48, decoder 3 x 2 x 40, no
  embedding scale; tokenizer: transformers' BART (byte-level BPE, ``<s> ... </s>``).
* ``mbart``: pre-norm with final norms, ``scale_embedding``, untied head and embeddings
  (``tie_word_embeddings: false``: every table stored, in float16), gelu_new, encoder 3 x 2 x 36, decoder
  2 x 4 x 56; tokenizer: ``MBartTokenizer`` (Unigram, ``... </s> en_XX``).
* ``marian``: sinusoidal positions (sines then cosines, not stored), ``scale_embedding``, swish, separate
  source/target vocabularies (``share_encoder_decoder_embeddings: false``,
  ``decoder_vocab_size`` < ``vocab_size``), the pad token as decoder start, EOS 0, nonzero
  ``final_logits_bias``; no tokenizer (transformers' Marian tokenizer needs sentencepiece
  files): token-level cases only.
* ``m2m100``: pre-norm, padded sinusoidal positions numbered from the non-pad tokens, relu,
  ``scale_embedding``, odd d_model (33: the sinusoid's zero column), encoder 3 heads, decoder
  11 heads; tokenizer: ``NllbTokenizer`` (``eng_Latn ... </s>``).

Each directory's generation_config.json holds its family's real defaults (written by hand from
the published models' files, ids mapped to the tiny vocabularies): bart = facebook/bart-large-cnn
(forced BOS 0 and EOS 2, 4 beams, length_penalty 2, no_repeat_ngram_size 3, min/max_length 56/142,
early stopping), mbart = facebook/mbart-large-50-many-to-many-mmt (forced EOS, 5 beams,
max_length 200), marian = Helsinki-NLP/opus-mt-* (pad as decoder start and banned word, forced
EOS, 4 beams, max_length 512, renormalize_logits), m2m100 = facebook/nllb-200-distilled-600M
(greedy, max_length 200). Cases named ``defaults_*`` and ``text_defaults`` call generate with no
option, or override some; the generic cases compose with the defaults (greedy ones pass
``num_beams: 1``). ``text_tgt_lang*`` cases pass ``tgt_lang`` to fasttx and
``forced_bos_token_id=tokenizer.convert_tokens_to_ids(lang)`` (``hf_options``) to transformers.
Positions: max_position_embeddings fits each family's default max_length where the positions are
a hard limit (bart 144, mbart 200, marian 512).

Robustness: as scripts/make_fixtures.py (fixturelib.Checked): f32 and f64 runs agree, decisions
survive +-1e-4 noise, greedy margins > 1e-3.

Usage:  /path/to/python-with-torch-and-transformers scripts/make_seq2seq_fixtures.py
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
torch.use_deterministic_algorithms(True)

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    BartConfig,
    BartForConditionalGeneration,
    LogitsProcessorList,
    M2M100Config,
    M2M100ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MBartConfig,
    MBartForConditionalGeneration,
)

import fixturelib  # noqa: E402
from fixturelib import (  # noqa: E402
    FIXTURES,
    PROMPTS,
    TEXT_PROMPT_SETS,
    TRAINING_LINES,
    Checked,
    Jitter,
    Pools,
    n_eos_finished,
    pad_right,
    pick,
    strip_private,
    write_expected,
    write_json,
)

# Candidates per case: the first few pass here; the default (60) only burns time on a `prefer`
# predicate that no candidate meets.
fixturelib.MAX_TRIES = 16

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

COMMON = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0)

SPECS = {
    "bart": dict(
        seed=4100,
        cls=BartForConditionalGeneration,
        config_cls=BartConfig,
        tokenizer="bart",
        config=dict(
            d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=48,
            decoder_layers=3, decoder_attention_heads=2, decoder_ffn_dim=40,
            max_position_embeddings=144, activation_function="gelu", scale_embedding=False,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            tie_word_embeddings=True,
        ),
        start=2, eos=2, pad=1, mix_final_norm=True,
        # facebook/bart-large-cnn's generation_config.json.
        generation=dict(
            bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, pad_token_id=1,
            forced_bos_token_id=0, forced_eos_token_id=2, no_repeat_ngram_size=3, num_beams=4,
            length_penalty=2.0, min_length=56, max_length=142, early_stopping=True,
        ),
        # min_length 56 would keep EOS out of every short case: the generic cases lift it.
        plain=dict(min_length=0),
        overrides=[
            ("defaults_num_beams1", dict(num_beams=1)),
            ("defaults_lp1_no_early_stop", dict(length_penalty=1.0, early_stopping=False, max_new_tokens=64)),
            ("defaults_nrs2_max_length", dict(num_return_sequences=2, max_length=70)),
        ],
    ),
    "mbart": dict(
        seed=4200,
        cls=MBartForConditionalGeneration,
        config_cls=MBartConfig,
        tokenizer="mbart",
        storage=torch.float16,
        config=dict(
            d_model=40, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=36,
            decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=56,
            max_position_embeddings=200, activation_function="gelu_new", scale_embedding=True,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            tie_word_embeddings=False,
        ),
        start=2, eos=2, pad=1, mix_final_norm=True,
        # facebook/mbart-large-50-many-to-many-mmt's generation_config.json.
        generation=dict(
            bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, pad_token_id=1,
            forced_eos_token_id=2, num_beams=5, max_length=200, early_stopping=True,
        ),
        tgt_lang="de_DE",
        overrides=[
            ("defaults_num_beams1", dict(num_beams=1)),
            ("defaults_beam4_nrs2_lp06", dict(num_beams=4, num_return_sequences=2, length_penalty=0.6, max_new_tokens=20)),
            ("defaults_early_never", dict(early_stopping="never", max_new_tokens=16)),
        ],
    ),
    "marian": dict(
        seed=4302,  # 4300 draws a model whose int8 logits are ill-conditioned (f32 vs f64 7.6e-4)
        cls=MarianMTModel,
        config_cls=MarianConfig,
        tokenizer=None,
        vocab=260,
        config=dict(
            vocab_size=260, decoder_vocab_size=230, share_encoder_decoder_embeddings=False,
            d_model=30, encoder_layers=2, encoder_attention_heads=3, encoder_ffn_dim=44,
            decoder_layers=2, decoder_attention_heads=5, decoder_ffn_dim=36,
            max_position_embeddings=512, activation_function="swish", scale_embedding=True,
            pad_token_id=229, eos_token_id=0, decoder_start_token_id=229, bos_token_id=None,
            tie_word_embeddings=True,
        ),
        start=229, eos=0, pad=229, eos_scale=1.4, logits_bias=0.1,
        # Helsinki-NLP/opus-mt-*'s generation_config.json (the pad id is the vocabulary's last).
        generation=dict(
            bos_token_id=0, decoder_start_token_id=229, eos_token_id=0, pad_token_id=229,
            bad_words_ids=[[229]], forced_eos_token_id=0, max_length=512, num_beams=4,
            renormalize_logits=True,
        ),
        overrides=[
            ("defaults_num_beams1", dict(num_beams=1)),
            ("defaults_forced_eos_short", dict(max_new_tokens=10)),
            ("defaults_no_renormalize_nrs2", dict(renormalize_logits=False, num_return_sequences=2, max_new_tokens=20)),
        ],
    ),
    "m2m100": dict(
        seed=4400,
        cls=M2M100ForConditionalGeneration,
        config_cls=M2M100Config,
        tokenizer="nllb",
        config=dict(
            d_model=33, encoder_layers=2, encoder_attention_heads=3, encoder_ffn_dim=40,
            decoder_layers=3, decoder_attention_heads=11, decoder_ffn_dim=48,
            max_position_embeddings=64, activation_function="relu", scale_embedding=True,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            tie_word_embeddings=True,
        ),
        start=2, eos=2, pad=1, eos_scale=1.5, q_gain=4.0, mix_final_norm=True, embed_std=0.5,
        cross_gain=6.0,
        # facebook/nllb-200-distilled-600M's generation_config.json (greedy: no num_beams).
        generation=dict(bos_token_id=0, decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, max_length=200),
        tgt_lang="deu_Latn",
        overrides=[
            # facebook/m2m100_418M's settings (its generation_config.json: 5 beams, early stopping).
            ("defaults_m2m100_beams5", dict(num_beams=5, early_stopping=True)),
            ("defaults_beam4_nrs2_lp06", dict(num_beams=4, num_return_sequences=2, length_penalty=0.6, max_new_tokens=20)),
            ("defaults_forced_eos", dict(forced_eos_token_id=2, max_new_tokens=12)),
        ],
    ),
}

LANGS = ["eng_Latn", "deu_Latn", "fra_Latn"]


# ---------------------------------------------------------------------------
# Tokenizers (trained here, saved by the family's transformers class)
# ---------------------------------------------------------------------------


def train_bpe(vocab_size: int, byte_level: bool, specials: list[str]):
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(TRAINING_LINES * 2, trainer)
    import json

    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(vocab_size: int, specials: list[str]):
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(TRAINING_LINES * 2, trainer)
    import json

    return [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]


def make_tokenizer(kind: str, out: Path):
    """The family's tokenizer, saved into ``out``; returns it as transformers loads it back."""
    from transformers import AutoTokenizer, MBartTokenizer, NllbTokenizer, RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    if kind == "bart":
        vocab, merges = train_bpe(420, True, specials)
        tok = RobertaTokenizer(vocab=vocab, merges=merges)
    elif kind == "mbart":
        vocab = train_unigram(240, specials)
        tok = MBartTokenizer(vocab=vocab, src_lang="en_XX")
    elif kind == "nllb":
        vocab, merges = train_bpe(260, False, specials)
        tok = NllbTokenizer(vocab=vocab, merges=merges, extra_special_tokens=LANGS, src_lang="eng_Latn")
    else:
        raise ValueError(kind)
    tok.save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out))


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def shape_weights(model, gen: torch.Generator, spec: dict) -> None:
    """Decisive random weights: projections with unit-gain fan-in scaling (the default 0.02 makes
    every logit a near-tie), jittered norms, visible biases and positions, and a louder EOS row
    of the head (so that some hypotheses finish).

    A random decoder is nearly a function of its current token, so greedy search falls into a
    short cycle (often of length 1: with a tied head the current token's own embedding dominates
    the last hidden state). Sharper attention (``q_gain``: m2m100 only, it makes the others'
    int8 logits too sensitive for test_int8_logits_close_to_transformers) and a zero-mean gain on the decoder's
    last norm (``mix_final_norm``: the hidden state's dot product with the current token's row no
    longer sums positive squares) make the outputs vary; Marian's ``final_logits_bias`` is kept
    small (``logits_bias``) so that no token wins everywhere."""
    eos, eos_scale = spec["eos"], spec.get("eos_scale", 2.0)
    q_gain, cross_gain = spec.get("q_gain", 2.0), spec.get("cross_gain", 4.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.25 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("embed_positions.weight"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2 and ("embed_tokens" in name or "shared" in name or "lm_head" in name):
                p.copy_(spec.get("embed_std", 1.0) * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:
                # Sharp attention; loud decoder sublayers, so that the residual stream is not just
                # the current token's embedding (a tied random model otherwise repeats it).
                gain = q_gain if name.endswith("q_proj.weight") else 1.2
                if "decoder" in name and name.endswith(("out_proj.weight", "fc2.weight")):
                    gain = cross_gain if "encoder_attn" in name else 3.0
                p.copy_(gain * torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        if hasattr(model, "final_logits_bias"):
            bias = spec.get("logits_bias", 0.5)
            model.final_logits_bias.copy_(bias * torch.randn(model.final_logits_bias.shape, generator=gen))
        if spec.get("mix_final_norm"):
            decoder = model.get_decoder()
            last = decoder.layer_norm if getattr(decoder, "layer_norm", None) is not None else decoder.layers[-1].final_layer_norm
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen))
        model.get_output_embeddings().weight[eos].mul_(eos_scale)


def build(name: str, spec: dict, out: Path, vocab: int) -> None:
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    cfg_kwargs = {**COMMON, **spec["config"], "forced_eos_token_id": None}
    cfg_kwargs.setdefault("vocab_size", vocab)
    config = spec["config_cls"](**cfg_kwargs)
    model = spec["cls"](config).eval()
    shape_weights(model, gen, spec)
    model.generation_config = transformers.GenerationConfig(**spec["generation"])
    # mBART's untied tables (four of them) would pass the size budget in f32: it is stored in f16.
    model.to(spec.get("storage", torch.float32)).save_pretrained(str(out))


def load(spec: dict, out: Path):
    return spec["cls"].from_pretrained(str(out), dtype=torch.float32).eval()


def run_generate(model, rows, options, jitter: Jitter | None = None):
    ids, mask = pad_right(rows, model.config.pad_token_id)
    extra = {"logits_processor": LogitsProcessorList([jitter])} if jitter is not None else {}
    with torch.no_grad():
        res = model.generate(input_ids=ids, attention_mask=mask, **extra, do_sample=False,
                             return_dict_in_generate=True, output_scores=True, **options)
    res.prompt_width = 1
    return res


class SeqPools(Pools):
    """Random rows of ordinary tokens ending with EOS (as the family's tokenizers end inputs)."""

    def __init__(self, vocab: int, eos: int, specials: set[int], seed: int, sents: list[list[int]]):
        self.rng = np.random.RandomState(seed)
        self.vocab, self.eos, self.specials = vocab, eos, specials
        self.sent = sents or [self.rand_row(6 + k) for k in range(len(PROMPTS))]

    def rand_row(self, n: int) -> list[int]:
        row = []
        while len(row) < n - 1:
            t = int(self.rng.randint(0, self.vocab))
            if t not in self.specials:
                row.append(t)
        return row + [self.eos]


def generate_cases(checker: Checked, pools: Pools, spec: dict):
    """The generic cases (each option on its own; greedy ones say ``num_beams: 1`` against the
    family's beam default, and ``spec["plain"]`` lifts defaults that would hide what a case tests),
    then the family's generation_config.json defaults alone (no options at all) and overridden."""
    eos, plain = spec["eos"], spec.get("plain", {})
    cases = []

    def add(name, rows, options, r):
        cases.append(dict(name=name, input_ids=rows, options=options, sequences=r["sequences"], _margin=r["margin"],
                          _eos_finished=n_eos_finished(r, options.get("max_new_tokens", 10**6)),
                          _beams=r["num_beams"]))

    def eos_somewhere(o):
        return lambda r: n_eos_finished(r, o.get("max_new_tokens", 10**6)) >= 1

    def case(name, kind, options, prefer_eos=False):
        rows, r = pick(checker, pools, kind, options, prefer=eos_somewhere(options) if prefer_eos else None)
        add(name, rows, options, r)
        print(f"    {name}: {r['sequences']}", file=sys.stderr, flush=True)

    greedy = {"num_beams": 1, **plain}
    case("greedy_single", "single", {"max_new_tokens": 16, **greedy})
    case("greedy_ragged3", "ragged3", {"max_new_tokens": 20, "repetition_penalty": 1.5, **greedy}, prefer_eos=True)
    case("greedy_min_new_tokens", "ragged2", {"max_new_tokens": 12, "min_new_tokens": 6, **greedy})
    case("greedy_eos_list", "ragged2", {"max_new_tokens": 12, "eos_token_id": [eos, 5], **greedy}, prefer_eos=True)
    case("beam3", "single", {"num_beams": 3, "max_new_tokens": 14, "length_penalty": 1.0, **plain}, prefer_eos=True)
    case("beam4_nrs2_ragged2", "ragged2", {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6,
                                           "early_stopping": True, "max_new_tokens": 12, **plain}, prefer_eos=True)
    case("beam4_nrs2_lp2_ragged2", "ragged2", {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 2.0,
                                               "early_stopping": False, "max_new_tokens": 16, **plain}, prefer_eos=True)
    case("beam2_penalties_ragged3", "ragged3", {"num_beams": 2, "max_new_tokens": 10, "repetition_penalty": 1.3,
                                                "no_repeat_ngram_size": 2, **plain})
    # The model's own defaults: transformers' model.generate(input_ids) with no option.
    case("defaults_single", "single", {}, prefer_eos=True)
    case("defaults_ragged2", "ragged2", {}, prefer_eos=True)
    for name, options in spec["overrides"]:
        case(name, "ragged2", options, prefer_eos=True)
    return cases


def logits_cases(pools: SeqPools, m32, m64, start: int, dec_vocab: int, pad: int, long_len: int):
    rng = np.random.RandomState(7)

    def dec(batch, n):
        d = rng.randint(3, dec_vocab, size=(batch, n))
        d[d == pad] = 3
        d[:, 0] = start
        return d.tolist()

    specs = [
        ("logits_0", [pools.sent[0], pools.sent[3]], dec(2, 7)),
        ("logits_1", [pools.rand_row(long_len), pools.rand_row(long_len // 2)], dec(2, long_len // 2)),
    ]
    cases, arrays, diffs = [], {}, {}
    for name, rows, d in specs:
        ids, mask = pad_right(rows, pad)
        with torch.no_grad():
            l32 = m32(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor(d)).logits
            l64 = m64(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor(d)).logits
        arrays[name] = l32.numpy().astype(np.float32)
        diffs[name] = float((l32.double() - l64).abs().max())
        cases.append(dict(name=name, input_ids=ids.tolist(), attention_mask=mask.tolist(), decoder_input_ids=d))
    return cases, arrays, diffs


def text_cases(tok_hf, checker: Checked, spec: dict):
    """Texts through the family's tokenizer: generic options, the model's defaults (no option),
    and ``tgt_lang`` (transformers: ``forced_bos_token_id=tokenizer.convert_tokens_to_ids(lang)``).
    ``encodings`` are the tokenizer's ids of the prompts (source-language tokens included)."""
    plain = spec.get("plain", {})
    wanted = [
        ("text_greedy", {"max_new_tokens": 12, "num_beams": 1, **plain}),
        ("text_beam", {"num_beams": 3, "max_new_tokens": 10, **plain}),
        ("text_defaults", {}),
    ]
    if spec.get("tgt_lang"):
        wanted += [
            ("text_tgt_lang", {"tgt_lang": spec["tgt_lang"]}),
            ("text_tgt_lang_greedy", {"tgt_lang": spec["tgt_lang"], "num_beams": 1, "max_new_tokens": 16}),
        ]
    out = []
    for name, options in wanted:
        hf_options = dict(options)
        if "tgt_lang" in hf_options:
            lang = hf_options.pop("tgt_lang")
            hf_options["forced_bos_token_id"] = tok_hf.convert_tokens_to_ids(lang)
            assert hf_options["forced_bos_token_id"] != tok_hf.unk_token_id, lang
        for prompts in TEXT_PROMPT_SETS:
            rows = tok_hf(prompts)["input_ids"]
            r = checker.run(rows, hf_options)
            if not Checked.ok(r):
                continue
            batch = tok_hf(prompts, padding=True, return_tensors="pt")
            with torch.no_grad():
                seqs = checker.m32.generate(**batch, do_sample=False, **hf_options)
            assert torch.equal(seqs, r["raw"].sequences), "tokenizer padding differs from pad_right()"
            texts = tok_hf.batch_decode(seqs, skip_special_tokens=True)
            out.append(dict(name=name, prompts=prompts, options=options, hf_options=hf_options, encodings=rows,
                            texts=texts, _margin=r["margin"]))
            break
        else:
            raise RuntimeError(f"no clean prompt set for {name}")
    return out


def make_one(name: str, versions: dict) -> dict:
    spec = SPECS[name]
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok_hf = make_tokenizer(spec["tokenizer"], out) if spec["tokenizer"] else None
    vocab = len(tok_hf) if tok_hf is not None else spec["vocab"]
    build(name, spec, out, vocab)
    m32 = load(spec, out)
    m64 = copy.deepcopy(m32).double()
    cfg = m32.config
    dec_vocab = getattr(cfg, "decoder_vocab_size", None) or cfg.vocab_size
    specials = {0, 1, 2, 3, spec["pad"], spec["eos"]}
    if tok_hf is not None:
        specials |= set(tok_hf.all_special_ids)
        sents = [tok_hf(p)["input_ids"] for p in PROMPTS]
    else:
        sents = []
    # Marian's source ids stay inside the target vocabulary too, so one pool serves both.
    pools = SeqPools(min(cfg.vocab_size, dec_vocab), spec["eos"], specials, spec["seed"] + 7, sents)
    pools.max_len = cfg.max_position_embeddings
    checker = Checked(m32, m64, run_generate, alone=False)
    lcases, arrays, diffs = logits_cases(pools, m32, m64, spec["start"], dec_vocab, spec["pad"],
                                         min(cfg.max_position_embeddings, 40))
    gcases = generate_cases(checker, pools, spec)
    tcases = text_cases(tok_hf, checker, spec) if tok_hf is not None else []
    np.savez(out / "logits.npz", **arrays)
    write_expected(out / "expected.json", {
        "versions": versions,
        "logits": lcases,
        "generate": [strip_private(c) for c in gcases],
        "text": [strip_private(c) for c in tcases],
    })
    for f in out.iterdir():
        f.chmod(0o644)
    return dict(name=name, diffs=diffs, gen=gcases, text=tcases)


def main(argv: list[str]) -> int:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    names = argv or list(SPECS)
    for name in names:
        s = make_one(name, versions)
        print(f"== {name}: max |f32 - f64| logits {max(s['diffs'].values()):.2e}")
        for c in s["gen"] + s["text"]:
            m = c["_margin"]
            print(f"  {c['name']:26s} margin {'-' if m is None else f'{m:.4f}':>7s}  "
                  f"{c.get('_eos_finished', '')} {c.get('sequences', c.get('texts'))}")
        size = sum(p.stat().st_size for p in (FIXTURES / name).iterdir())
        print(f"  size {size / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
