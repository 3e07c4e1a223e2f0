#!/usr/bin/env python3
"""Generate ``tests/fixtures/processors13/``: what transformers' ``generate()`` makes of the options
the translation family relies on (``forced_bos_token_id``, ``forced_eos_token_id``,
``bad_words_ids``, ``renormalize_logits``, ``decoder_start_token_id``) and of generation-config
defaults (``num_beams``, ``max_length``, ``min_length``, ``no_repeat_ngram_size``,
``length_penalty``, ``early_stopping``, ...), on the EXISTING tiny fixture models
(``t5_v1_0``: encoder-decoder; ``llama_gqa``: decoder-only, eos [2, 5], pad 0).

What it makes
-------------
``cases.json`` with three lists:

* ``generate``: ``{"name", "model", "input_ids" (ragged, unpadded), "options", "sequences",
  "generation_config" (optional), "config_keys" (optional), "ties" (optional)}``. ``sequences`` are
  transformers' new tokens per returned row, cut after the first EOS in effect (the shape
  ``fasttx.Model.generate_ids`` returns). Encoder inputs are right-padded with 0, decoder-only
  prompts left-padded with the pad id in effect, as fasttx pads ragged lists. With
  ``generation_config`` the test copies the model folder and writes that ``generation_config.json``
  (``config_keys``: merged into ``config.json`` instead, with no ``generation_config.json``: the
  keys transformers then reads from ``config.json``), so defaults come from the files.
  Greedy and beam search, one processor alone and together with the others (the order of
  ``_get_logits_processor`` decides e.g. that a forced EOS beats ``min_new_tokens``, that a forced
  BOS beats a ban of the same token, and that a forced EOS at ``max_length - 1`` beats a forced BOS
  when both fall on the first step). ``bad_words_ids`` are derived from the unbanned output so that
  each ban really changes something (single tokens, two- and three-token sequences, a sequence
  whose prefix is the decoder start token, one whose prefix reaches into a decoder-only row's
  left padding, an EOS-only ban that transformers drops).
  Every case is run in float32 and float64 and with +-1e-4 noise on every processed score
  (``fixturelib.Checked``); a case whose tokens move is replaced by the next candidate input.
  ``ties``: the case holds a genuine tie that both sides break the same documented way (a forced
  EOS with several ids in greedy search: every id scores 0 and ``argmax`` takes the lowest id, as
  ``torch.argmax`` takes the first), so the noise check is skipped for it.
* ``scores``: ``{"name", "model", "options", "history", "padding", "prompt_len", "beam", "hf"}``
  with ``scores.npz["in/<name>"]`` and ``["out/<name>"]``: the processor list transformers'
  ``generate`` builds for these options (captured from ``_get_logits_processor``; ``hf`` names it),
  applied to seeded random scores (log-probabilities for beam search) and token histories chosen
  so that every processor acts on some row. This is how sampling is checked: fasttx's draws come
  from its own random streams, so the tokens cannot equal torch's, but the distribution they are
  drawn from (the processed and warped scores) must.
* ``invalid``: options transformers refuses with a ``ValueError`` (message recorded) before
  generating; fasttx must refuse them with a ``ValueError`` too.

Made with torch / transformers / numpy (versions recorded in cases.json). Run from the repository:
``python scripts/make_processor13_fixtures.py`` (deterministic).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LogitsProcessorList  # noqa: E402

from fixturelib import FIXTURES, Checked, cache_kwargs, pad_left, pad_right, to_api_sequences  # noqa: E402

OUT = FIXTURES / "processors13"
T5 = "t5_v1_0"
DEC = "llama_gqa"


# --------------------------------------------------------------------------------------------
# Models and running generate


def load_pair(directory: Path):
    """float32 and float64 copies of the model in ``directory``."""
    seq2seq = json.loads((directory / "config.json").read_text()).get("is_encoder_decoder")
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    m32 = cls.from_pretrained(str(directory), dtype=torch.float32).eval()
    m64 = cls.from_pretrained(str(directory), dtype=torch.float32).eval().double()
    return m32, m64


def pad_id(model, options: dict) -> int:
    pad = options.get("pad_token_id", model.generation_config.pad_token_id)
    if pad is not None:
        return pad
    eos = options.get("eos_token_id", model.generation_config.eos_token_id)
    return (eos if isinstance(eos, int) else eos[0]) if eos is not None else 0


def run_generate(model, rows, options, jitter=None):
    """generate() as fasttx's generate_ids(rows) pads them; ``prompt_width`` set for fixturelib."""
    if model.config.is_encoder_decoder:
        ids, mask = pad_right(rows)
        width = 1
    else:
        ids, mask = pad_left(rows, pad_id(model, options))
        width = ids.shape[1]
    extra = {"logits_processor": LogitsProcessorList([jitter])} if jitter is not None else {}
    with torch.no_grad():
        res = model.generate(
            input_ids=ids,
            attention_mask=mask,
            **cache_kwargs(model),
            **extra,
            return_dict_in_generate=True,
            output_scores=True,
            **options,
        )
    res.prompt_width = width
    return res


def candidates(model_name: str, n: int = 40) -> list[list[list[int]]]:
    """Candidate input batches, deterministic: ragged pairs and triples of random ordinary tokens
    (T5 rows end with </s> = 1; decoder-only rows start with <s> = 1)."""
    rng = np.random.RandomState(13)
    out = []
    for k in range(n):
        sizes = [3 + k % 5, 7 + (3 * k) % 6] + ([2 + k % 3] if k % 2 else [])
        if model_name == T5:
            out.append([[int(t) for t in rng.randint(3, 380, size=s - 1)] + [1] for s in sizes])
        else:
            out.append([[1] + [int(t) for t in rng.randint(6, 350, size=s - 1)] for s in sizes])
    return out


# --------------------------------------------------------------------------------------------
# generate() cases


class Runner:
    def __init__(self):
        self.pairs: dict = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="processors13_"))

    def models(self, model_name: str, gen_config=None, config_keys=None):
        key = (model_name, json.dumps(gen_config, sort_keys=True), json.dumps(config_keys, sort_keys=True))
        if key not in self.pairs:
            src = FIXTURES / model_name
            if gen_config is None and config_keys is None:
                directory = src
            else:
                directory = self.tmp / f"m{len(self.pairs)}"
                shutil.copytree(src, directory)
                if gen_config is not None:
                    (directory / "generation_config.json").write_text(json.dumps(gen_config))
                if config_keys is not None:
                    (directory / "generation_config.json").unlink(missing_ok=True)
                    cfg = json.loads((directory / "config.json").read_text())
                    cfg.update(config_keys)
                    (directory / "config.json").write_text(json.dumps(cfg))
            self.pairs[key] = load_pair(directory)
        return self.pairs[key]

    def case(self, name, model_name, options, *, derive=None, want=None, gen_config=None, config_keys=None,
             ties=False, rows=None):  # fmt: skip
        """The first candidate batch on which the case is robust (and ``want(sequences, base)``
        holds). ``derive(base)`` turns the output without the derived options into the options
        (bad words taken from what the model would otherwise say)."""
        m32, m64 = self.models(model_name, gen_config, config_keys)
        checker = Checked(m32, m64, run_generate, alone=False)
        pool = [rows] if rows is not None else candidates(model_name)
        for batch in pool:
            opts = dict(options)
            base = None
            if derive is not None:
                base = checker.run(batch, opts)
                if not Checked.ok(base):
                    continue
                try:
                    opts.update(derive(base["sequences"]))
                except IndexError:  # the output is too short to take the bans from
                    continue
            r = checker.run(batch, opts)
            robust = r["same"] if ties else Checked.ok(r)
            if robust and (want is None or want(r["sequences"], base and base["sequences"])):
                out = dict(name=name, model=model_name, input_ids=batch, options=opts, sequences=r["sequences"])
                if gen_config is not None:
                    out["generation_config"] = gen_config
                if config_keys is not None:
                    out["config_keys"] = config_keys
                if ties:
                    out["ties"] = True
                print(f"  {name:44s} {model_name:9s} {r['sequences']}")
                return out
        raise RuntimeError(f"{name}: no robust candidate input")


def differs(seqs, base):
    return base is not None and seqs != base


T5_GEN = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
DEC_GEN = {"bos_token_id": 1, "eos_token_id": [2, 5], "pad_token_id": 0}


def generate_cases(run: Runner) -> list[dict]:
    cases = []
    add = cases.append
    for m in (T5, DEC):
        eos = 1 if m == T5 else 2
        start = 0 if m == T5 else None  # T5's decoder start token (the pad): a prefix of bans
        # --- forced BOS
        add(run.case(f"{m}/forced_bos", m, {"max_new_tokens": 6, "forced_bos_token_id": 17}))
        add(run.case(f"{m}/forced_bos_beam3", m, {"max_new_tokens": 6, "forced_bos_token_id": 17, "num_beams": 3,
                                                    "num_return_sequences": 2}))  # fmt: skip
        # --- forced EOS at max_length - 1, for each way transformers gets max_length
        add(run.case(f"{m}/forced_eos_max_new", m, {"max_new_tokens": 6, "forced_eos_token_id": eos}))
        add(run.case(f"{m}/forced_eos_max_length", m, {"max_length": 11, "forced_eos_token_id": eos}))
        add(run.case(f"{m}/forced_eos_default_length", m, {"forced_eos_token_id": eos}))
        add(run.case(f"{m}/forced_eos_not_an_eos", m, {"max_new_tokens": 5, "forced_eos_token_id": 3}))
        add(run.case(f"{m}/forced_eos_list_greedy", m, {"max_new_tokens": 5, "forced_eos_token_id": [7, eos]},
                     ties=True))  # fmt: skip
        add(run.case(f"{m}/forced_eos_beam4_rs3", m, {"max_new_tokens": 7, "forced_eos_token_id": eos, "num_beams": 4,
                                                       "num_return_sequences": 3}))  # fmt: skip
        add(run.case(f"{m}/forced_eos_beam3_never", m, {"max_length": 9 if m == T5 else 16, "forced_eos_token_id": eos,
                                                         "num_beams": 3, "early_stopping": "never",
                                                         "length_penalty": 2.0}))  # fmt: skip
        # --- bad words (derived from what the model says without them)
        add(run.case(f"{m}/bad_words_single", m, {"max_new_tokens": 7},
                     derive=lambda b: {"bad_words_ids": [[b[0][1]], [b[1][0]]]}, want=differs))  # fmt: skip
        add(run.case(f"{m}/bad_words_sequences", m, {"max_new_tokens": 8},
                     derive=lambda b: {"bad_words_ids": [[b[0][2], b[0][3]], [b[1][1], b[1][2], b[1][3]], [99, 4, 5]]},
                     want=differs))  # fmt: skip
        add(run.case(f"{m}/bad_words_eos_only_ban_dropped", m, {"max_new_tokens": 8, "min_new_tokens": 0},
                     derive=lambda b: {"bad_words_ids": [[eos], [], [b[0][1]]]}, want=differs))  # fmt: skip
        if start is not None:
            add(run.case(f"{m}/bad_words_start_prefix", m, {"max_new_tokens": 5},
                         derive=lambda b: {"bad_words_ids": [[start, b[0][0]]]}, want=differs))  # fmt: skip
        else:
            # A three-token ban whose prefix is (pad, <s>): only a row padded on the left matches it,
            # and only in this batch's company (transformers matches the padded input_ids).
            add(run.case(f"{m}/bad_words_padding_prefix", m, {"max_new_tokens": 5},
                         rows=[[1, 40, 77, 101, 9, 13], [1]],
                         derive=lambda b: {"bad_words_ids": [[0, 1, b[1][0]]]}, want=differs))  # fmt: skip
        add(run.case(f"{m}/bad_words_beam4", m, {"max_new_tokens": 7, "num_beams": 4, "num_return_sequences": 2},
                     derive=lambda b: {"bad_words_ids": [[b[0][0]], [b[1][1], b[1][2]]]}, want=differs))  # fmt: skip
        # --- renormalize_logits (changes beam scores only)
        add(run.case(f"{m}/renormalize_beam4", m, {"max_new_tokens": 8, "num_beams": 4, "renormalize_logits": True,
                                                    "num_return_sequences": 4},
                     derive=lambda b: {"bad_words_ids": [[b[0][0]], [b[0][1]], [b[1][0]]]}))  # fmt: skip
        # --- interactions: transformers' order decides
        add(run.case(f"{m}/forced_eos_beats_min_new_tokens", m, {"max_new_tokens": 6, "min_new_tokens": 10,
                                                                  "forced_eos_token_id": eos}))  # fmt: skip
        add(run.case(f"{m}/forced_bos_beats_ban", m, {"max_new_tokens": 5, "forced_bos_token_id": 17,
                                                       "bad_words_ids": [[17], [17, 18]]}))  # fmt: skip
        add(run.case(f"{m}/forced_eos_beats_forced_bos", m, {"max_new_tokens": 1, "forced_bos_token_id": 17,
                                                              "forced_eos_token_id": eos}))  # fmt: skip
        add(run.case(f"{m}/everything_greedy", m, {"max_new_tokens": 9, "min_new_tokens": 3, "repetition_penalty": 1.3,
                                                    "no_repeat_ngram_size": 2, "forced_bos_token_id": 21,
                                                    "forced_eos_token_id": eos},
                     derive=lambda b: {"bad_words_ids": [[b[0][2]], [b[0][3], b[0][4]]]}))  # fmt: skip
        add(run.case(f"{m}/everything_beam3", m, {"max_new_tokens": 9, "min_length": 4, "repetition_penalty": 0.8,
                                                   "no_repeat_ngram_size": 3, "forced_bos_token_id": 21,
                                                   "forced_eos_token_id": eos, "num_beams": 3,
                                                   "num_return_sequences": 3, "renormalize_logits": True,
                                                   "length_penalty": -0.5, "early_stopping": True},
                     derive=lambda b: {"bad_words_ids": [[b[0][3]], [b[1][2], b[1][3]]]}))  # fmt: skip
    # decoder-only: a one-token prompt is at length 1, where ForcedBOS acts (input_ids' length)
    add(run.case(f"{DEC}/forced_bos_one_token_prompt", DEC, {"max_new_tokens": 4, "forced_bos_token_id": 17},
                 rows=[[1]]))  # fmt: skip
    add(run.case(f"{T5}/decoder_start_token_id", T5, {"max_new_tokens": 5, "decoder_start_token_id": 7}))

    # --- defaults from the generation config
    marian_like = dict(T5_GEN, num_beams=4, max_length=12, bad_words_ids=[[0]], forced_eos_token_id=1,
                       renormalize_logits=True)  # fmt: skip
    add(run.case(f"{T5}/gc_marian_like", T5, {}, gen_config=marian_like))
    add(run.case(f"{T5}/gc_marian_like_override", T5, {"max_new_tokens": 5, "num_return_sequences": 2},
                 gen_config=marian_like))  # fmt: skip
    add(run.case(f"{T5}/gc_marian_like_greedy", T5, {"num_beams": 1}, gen_config=marian_like))
    bart_like = dict(T5_GEN, num_beams=4, max_length=16, min_length=6, no_repeat_ngram_size=3, length_penalty=2.0,
                     early_stopping=True, forced_bos_token_id=21, forced_eos_token_id=1)  # fmt: skip
    add(run.case(f"{T5}/gc_bart_like", T5, {}, gen_config=bart_like))
    add(run.case(f"{T5}/gc_bart_like_max_new", T5, {"max_new_tokens": 7}, gen_config=bart_like))
    # max_length 20 written in the file is a total length (19 new tokens here), not the default
    add(run.case(f"{T5}/gc_max_length_20", T5, {}, gen_config=dict(T5_GEN, max_length=20),
                 want=lambda s, b: any(x[-1] != 1 for x in s)))  # the limit, not an EOS, ends a row
    add(run.case(f"{T5}/gc_min_new_and_bad_words", T5, {"max_new_tokens": 6},
                 gen_config=dict(T5_GEN, min_new_tokens=4, bad_words_ids=[[1, 1], [5]],
                                 forced_bos_token_id=30)))  # fmt: skip
    # no generation_config.json: transformers reads the generation keys of config.json
    add(run.case(f"{T5}/config_json_keys", T5, {}, config_keys=dict(num_beams=3, max_length=9, forced_eos_token_id=1,
                                                                    no_repeat_ngram_size=2)))  # fmt: skip
    dec_gc = dict(DEC_GEN, num_beams=3, max_length=14, forced_eos_token_id=[5], bad_words_ids=[[7], [8, 9]],
                  no_repeat_ngram_size=2)  # fmt: skip
    add(run.case(f"{DEC}/gc_beam_defaults", DEC, {}, gen_config=dec_gc))
    add(run.case(f"{DEC}/gc_beam_defaults_greedy", DEC, {"num_beams": 1}, gen_config=dec_gc))
    add(run.case(f"{DEC}/gc_max_length_20", DEC, {}, gen_config=dict(DEC_GEN, max_length=20),
                 want=lambda s, b: any(x[-1] not in (2, 5) for x in s)))  # the limit, not an EOS, ends a row
    return cases


# --------------------------------------------------------------------------------------------
# Score-level cases (sampling's distribution, beam sampling, greedy lists)


class _Captured(Exception):
    pass


def captured(model, rows, options):
    """The LogitsProcessorList ``model.generate(rows, **options)`` builds."""
    box = {}
    original = model._get_logits_processor

    def spy(*args, **kwargs):
        box["procs"] = original(*args, **kwargs)
        raise _Captured

    model._get_logits_processor = spy
    try:
        run_generate(model, rows, options)
    except _Captured:
        pass
    finally:
        del model._get_logits_processor
    return list(box["procs"])


def proc_name(p) -> str:
    attrs = {k: v for k, v in vars(p).items() if isinstance(v, (int, float, bool, str, list, tuple, torch.Tensor))}
    args = ", ".join(f"{k}={v.tolist() if isinstance(v, torch.Tensor) else v}" for k, v in sorted(attrs.items()))
    return f"{type(p).__name__}({args})"


SCORE_CASES = [
    # name, model, options (max_new_tokens puts max_length - 1 at the history length), beam
    ("sample_forced_bos_bad_words", T5, {"do_sample": True, "top_k": 8, "temperature": 0.7, "forced_bos_token_id": 17,
                                         "bad_words_ids": [[4], [9, 10], [3, 9, 11]], "max_new_tokens": 9}, False),
    ("sample_forced_eos", T5, {"do_sample": True, "top_p": 0.8, "forced_eos_token_id": [1, 6], "min_new_tokens": 8,
                               "max_new_tokens": "H"}, False),
    ("sample_dec_bad_words_penalties", DEC, {"do_sample": True, "top_k": 0, "min_p": 0.05, "repetition_penalty": 1.3,
                                             "no_repeat_ngram_size": 2, "bad_words_ids": [[4], [9, 10], [0, 9]],
                                             "max_new_tokens": 9}, False),
    ("sample_dec_forced_eos", DEC, {"do_sample": True, "temperature": 1.3, "forced_eos_token_id": 5,
                                    "max_new_tokens": "H"}, False),
    ("beam_sample_renormalize", DEC, {"do_sample": True, "num_beams": 2, "top_k": 3, "renormalize_logits": True,
                                      "bad_words_ids": [[9, 10], [11]], "max_new_tokens": 9}, True),
    ("beam_renormalize_forced_eos", T5, {"num_beams": 2, "renormalize_logits": True, "forced_eos_token_id": 1,
                                         "bad_words_ids": [[9, 10], [0]], "max_new_tokens": "H"}, True),
    ("greedy_forced_bos", T5, {"forced_bos_token_id": 33, "no_repeat_ngram_size": 2, "max_new_tokens": 9}, False),
]  # fmt: skip


def histories(model_name: str, rng: np.random.RandomState, rows: int):
    """Token histories as transformers' input_ids hold them, rectangular: T5's decoder start 0 and
    the tokens so far (first rows of length 1: the forced BOS step); llama's left-padded prompts
    then the tokens so far. Small alphabets so that n-grams and ban prefixes recur."""
    if model_name == T5:
        body = [[int(t) for t in rng.choice([3, 9, 10, 11, 12, 6], size=5)] for _ in range(rows)]
        for r in range(0, rows, 3):
            body[r][-1] = 9  # a ban prefix
        return [[0] + b for b in body], [0] * rows, 1
    prompts = [[1] + [int(t) for t in rng.choice([9, 10, 11, 12, 20], size=2 + r % 3)] for r in range(rows)]
    width = max(map(len, prompts))
    ids = [[0] * (width - len(p)) + p + [int(t) for t in rng.choice([9, 10, 11, 13], size=3)] for p in prompts]
    for r in range(0, rows, 2):
        ids[r][-1] = 9
    return ids, [width - len(p) for p in prompts], width


def score_cases(run: Runner, arrays: dict) -> list[dict]:
    rng = np.random.RandomState(1313)
    out = []
    for name, model_name, options, beam in SCORE_CASES:
        m32, _ = run.models(model_name)
        vocab = m32.config.vocab_size
        rows = 6
        ids, padding, p0 = histories(model_name, rng, rows)
        if model_name == T5:
            ids[1] = ids[1][:1]  # the first step: ForcedBOS acts on rows of length 1
        opts = dict(options)
        length = max(len(r) for r in ids)
        if opts.get("max_new_tokens") == "H":  # forced EOS at this history's length
            opts["max_new_tokens"] = length + 1 - p0
        if model_name == T5:
            prompts = [[5, 6, 7, 1]] * (rows // 2 if beam else rows)
        else:
            prompts = [r[pad:p0] for r, pad in zip(ids, padding)][:: 2 if beam else 1]
        procs = captured(m32, prompts, opts)
        scores = rng.standard_normal((rows, vocab)).astype(np.float32) * 2.5
        if beam:
            scores = torch.log_softmax(torch.from_numpy(scores), -1).numpy()
        groups = {}
        for r, h in enumerate(ids):  # transformers' input_ids are rectangular: run each length apart
            groups.setdefault(len(h), []).append(r)
        expected = np.empty_like(scores)
        for members in groups.values():
            t = torch.tensor([ids[r] for r in members], dtype=torch.long)
            expected[members] = LogitsProcessorList(procs)(t, torch.from_numpy(scores[members].copy())).numpy()
        arrays[f"in/{name}"] = scores
        arrays[f"out/{name}"] = expected
        out.append(dict(name=name, model=model_name, options=opts, history=ids, padding=padding, prompt_len=p0,
                        beam=beam, hf=[proc_name(p) for p in procs]))  # fmt: skip
        print(f"  {name:36s} {[type(p).__name__ for p in procs]}")
    return out


# --------------------------------------------------------------------------------------------
# Options transformers refuses


INVALID = [
    {"bad_words_ids": []},
    {"bad_words_ids": [3, 4]},
    {"bad_words_ids": [[3], 4]},
    {"bad_words_ids": [[3, -1]]},
    {"bad_words_ids": [[3.0]]},
    {"bad_words_ids": [[1], [5000]]},  # beyond the vocabulary (T5's EOS-only ban is dropped, no error)
    {"bad_words_ids": [[3, 5000]]},
    {"bad_words_ids": [[5000]]},
    {"forced_eos_token_id": [1, -2]},
    {"forced_eos_token_id": -1},
    {"forced_eos_token_id": []},
]


def invalid_cases(run: Runner) -> list[dict]:
    m32, _ = run.models(T5)
    out = []
    for opts in INVALID:
        try:
            run_generate(m32, [[5, 6, 1]], dict(opts, max_new_tokens=3))
        except (ValueError, TypeError) as e:
            out.append(dict(model=T5, options=opts, error=type(e).__name__, message=str(e)[:200]))
            continue
        raise RuntimeError(f"transformers accepted {opts}")
    return out


def main() -> None:
    run = Runner()
    print("generate cases:")
    gen = generate_cases(run)
    arrays: dict = {}
    print("score cases:")
    scores = score_cases(run, arrays)
    invalid = invalid_cases(run)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"versions": versions, "generate": gen, "scores": scores, "invalid": invalid}
    text = json.dumps(doc, separators=(",", ":"))
    for key in ('"generate":[', '"scores":[', '"invalid":['):
        text = text.replace(key, key + "\n")
    text = text.replace('},{"name"', '},\n{"name"').replace('},{"model"', '},\n{"model"')
    (OUT / "cases.json").write_text(text + "\n")
    np.savez_compressed(OUT / "scores.npz", **arrays)
    shutil.rmtree(run.tmp)
    print(f"versions: {versions}; {len(gen)} generate, {len(scores)} score, {len(invalid)} invalid cases")
    for f in sorted(OUT.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
