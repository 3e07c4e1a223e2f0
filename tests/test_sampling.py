"""Sampling (do_sample=True) on the tiny fixture models: seeded reproducibility, and draws that
follow transformers' filtered distribution. No torch needed.

Reproducibility: the same seed and options give the same tokens on every run, with 1 or 2
threads, for a prompt alone or inside a batch (decoder-only and T5), and for every sequence of
``num_return_sequences``; other seeds give other tokens.

Distribution: for a prompt, the next-token distribution transformers samples from is computed
here from ``model.logits`` with a plain numpy re-implementation of transformers' processors
(``RepetitionPenaltyLogitsProcessor``, ``MinNewTokensLengthLogitsProcessor``, then the warpers
``TemperatureLogitsWarper``, ``TopKLogitsWarper`` (default 50), ``TopPLogitsWarper``,
``MinPLogitsWarper``, in ``_get_logits_processor``'s order, then softmax). The first token is drawn N times, once per
seed (one ``generate_ids(..., max_new_tokens=1, seed=s)`` per s), and:

* no draw may fall on a token the warpers remove (checked exactly; the cases are chosen so no
  token sits within a float rounding of a cut, which the test asserts);
* the count of each frequent token, and of the rest of the kept tokens together, must lie within
  a Bernstein bound of its expectation (see ``bernstein_radius``) set so that a correct sampler
  fails with probability < 1e-6 per check;
* the same counts must REJECT a deliberately wrong distribution (e.g. without the temperature),
  which shows the bound is tight enough to mean something.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import FIXTURES

N = 4000  # draws per distribution check: one generate_ids call per seed (~0.2 ms each)
FAIL_PROB = 1e-6  # probability that a correct sampler fails one distribution check

DECODER = "llama_gqa"
T5 = "t5_v1_0"
PROMPTS = [[1, 17, 42, 99, 7], [1, 5, 6, 7, 8, 9, 10], [1, 200], [1, 33, 33, 33, 120, 64, 9, 11, 300]]
T5_PROMPTS = [[5, 6, 7, 1], [40, 41, 42, 43, 44, 45, 1], [9, 1], [100, 7, 7, 7, 101, 1]]


@pytest.fixture(scope="module")
def models():
    import fasttx

    return {
        (DECODER, 2): fasttx.load(FIXTURES / DECODER, threads=2),
        (DECODER, 1): fasttx.load(FIXTURES / DECODER, threads=1),
        (T5, 2): fasttx.load(FIXTURES / T5, threads=2),
        (T5, 1): fasttx.load(FIXTURES / T5, threads=1),
    }


SAMPLE = dict(do_sample=True, temperature=1.2, top_k=0, max_new_tokens=8)
FILTERED = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_p=0.02, max_new_tokens=8)


# --------------------------------------------------------------------------------------------
# Reproducibility


@pytest.mark.parametrize("name,prompts", [(DECODER, PROMPTS), (T5, T5_PROMPTS)])
@pytest.mark.parametrize("options", [SAMPLE, FILTERED], ids=["plain", "filtered"])
def test_same_seed_same_tokens(models, name, prompts, options):
    m2, m1 = models[(name, 2)], models[(name, 1)]
    first = m2.generate_ids(prompts, seed=123, **options)
    assert first == m2.generate_ids(prompts, seed=123, **options), "a second run differs"
    assert first == m1.generate_ids(prompts, seed=123, **options), "threads=1 differs from threads=2"
    assert any(len(s) > 1 for s in first)


@pytest.mark.parametrize("name,prompts", [(DECODER, PROMPTS), (T5, T5_PROMPTS)])
def test_batch_composition(models, name, prompts):
    """A prompt's tokens do not depend on which prompts share its batch (nor on its place there,
    nor on the padding the batch needs)."""
    m = models[(name, 2)]
    alone = [m.generate_ids([p], seed=7, **SAMPLE)[0] for p in prompts]
    assert m.generate_ids(prompts, seed=7, **SAMPLE) == alone
    assert m.generate_ids(prompts[::-1], seed=7, **SAMPLE) == alone[::-1]
    assert m.generate_ids([prompts[2], prompts[0]], seed=7, **SAMPLE) == [alone[2], alone[0]]


@pytest.mark.parametrize("name,prompts", [(DECODER, PROMPTS), (T5, T5_PROMPTS)])
def test_other_seeds_other_tokens(models, name, prompts):
    m = models[(name, 2)]
    runs = [m.generate_ids(prompts, seed=s, **SAMPLE) for s in (0, 1, 2)]
    assert runs[0] != runs[1] and runs[1] != runs[2] and runs[0] != runs[2]


@pytest.mark.parametrize("name,prompts", [(DECODER, PROMPTS), (T5, T5_PROMPTS)])
def test_num_return_sequences(models, name, prompts):
    """Each of the n sequences is reproducible, the same inside a batch as alone, and they differ."""
    m2, m1 = models[(name, 2)], models[(name, 1)]
    n = 3
    out = m2.generate_ids(prompts, seed=5, num_return_sequences=n, **SAMPLE)
    assert len(out) == len(prompts) * n
    assert out == m2.generate_ids(prompts, seed=5, num_return_sequences=n, **SAMPLE)
    assert out == m1.generate_ids(prompts, seed=5, num_return_sequences=n, **SAMPLE)
    for i, p in enumerate(prompts):
        mine = out[i * n : (i + 1) * n]
        assert m2.generate_ids([p], seed=5, num_return_sequences=n, **SAMPLE) == mine
        assert len({tuple(s) for s in mine}) > 1, f"the {n} sequences of prompt {i} are all equal"


@pytest.mark.parametrize("name,prompts", [(DECODER, PROMPTS), (T5, T5_PROMPTS)])
def test_repeated_prompt_gives_separate_samples(models, name, prompts):
    """The same prompt several times in one call gives several samples (as transformers users get
    by repeating a prompt), each reproducible, wherever the copies fall in batches."""
    m = models[(name, 2)]
    p = prompts[1]
    copies = m.generate_ids([p] * 4, seed=11, **SAMPLE)
    assert len({tuple(s) for s in copies}) > 1, "four copies of one prompt sampled identically"
    assert copies[0] == m.generate_ids([p], seed=11, **SAMPLE)[0], "the first copy is the prompt alone"
    assert m.generate_ids([prompts[0], p, p, prompts[2], p, p], seed=11, **SAMPLE)[1:3] == copies[:2]


def test_repeated_text_prompt_across_batches(models):
    """In the text API, the k-th copy of a prompt samples the same whatever the batch size."""
    import fasttx

    m = fasttx.load(FIXTURES / "t5_v1_1", threads=2)
    prompts = ["hello world", "a", "hello world", "hello world", "a"]
    one = m.generate(prompts, batch_size=1, seed=3, do_sample=True, max_new_tokens=8, progress=False)
    assert one == m.generate(prompts, batch_size=32, seed=3, do_sample=True, max_new_tokens=8, progress=False)
    assert len({one[0], one[2], one[3]}) > 1


def test_greedy_ignores_the_seed(models):
    m = models[(DECODER, 2)]
    a = m.generate_ids(PROMPTS, max_new_tokens=6, seed=1)
    assert a == m.generate_ids(PROMPTS, max_new_tokens=6, seed=2) == m.generate_ids(PROMPTS, max_new_tokens=6)


# --------------------------------------------------------------------------------------------
# Distribution


def warped_probs(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=None, min_keep=1, margin=1e-4):
    """transformers' warpers, in float64, then softmax. Asserts that no token is within ``margin``
    of a cut (so float32 rounding in fasttx or in transformers cannot move it)."""
    s = np.asarray(logits, dtype=np.float64) / temperature
    if top_k:
        k = max(top_k, min_keep)
        desc = np.sort(s)[::-1]
        kth = desc[k - 1]
        assert k >= len(s) or desc[k - 1] - desc[k] > margin, "top_k cut too close to call"
        s = np.where(s < kth, -np.inf, s)
    if top_p < 1.0:
        order = np.argsort(s, kind="stable")  # ascending (equal scores never straddle the cut here)
        probs = _softmax(s[order])
        cum = np.cumsum(probs)
        remove = cum <= 1 - top_p
        remove[-min_keep:] = False
        assert np.min(np.abs(cum - (1 - top_p))) > margin, "top_p cut too close to call"
        s[order[remove]] = -np.inf
    if min_p is not None:
        probs = _softmax(s)
        threshold = min_p * probs.max()
        remove = probs < threshold
        remove[np.argsort(-probs, kind="stable")[:min_keep]] = False
        finite = probs > 0
        assert np.min(np.abs(probs[finite] - threshold)) > margin * threshold, "min_p cut too close to call"
        s = np.where(remove, -np.inf, s)
    return _softmax(s)


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def bernstein_radius(n: int, q: float, bins: int, fail_prob: float = FAIL_PROB) -> float:
    """A count X ~ Binomial(n, q) satisfies, by Bernstein's inequality,
        P(|X - nq| >= t) <= 2 exp(-t^2 / (2 (n q (1 - q) + t / 3))).
    With a union bound over ``bins`` counts, setting the right side to fail_prob / bins and solving
    for t gives the radius below: all bins stay inside with probability >= 1 - fail_prob."""
    log_term = math.log(2 * bins / fail_prob)
    var = n * q * (1 - q)
    return log_term / 3 + math.sqrt((log_term / 3) ** 2 + 2 * log_term * var)


def binned(counts: np.ndarray, probs: np.ndarray, min_prob: float = 0.02):
    """Tokens with probability >= min_prob each get a bin; the other kept tokens share one."""
    big = np.flatnonzero(probs >= min_prob)
    small = np.flatnonzero((probs > 0) & (probs < min_prob))
    obs = [counts[i] for i in big] + ([counts[small].sum()] if len(small) else [])
    exp = [probs[i] for i in big] + ([probs[small].sum()] if len(small) else [])
    return np.array(obs, dtype=np.float64), np.array(exp, dtype=np.float64)


def within_bounds(counts: np.ndarray, probs: np.ndarray) -> tuple[bool, str]:
    obs, q = binned(counts, probs)
    n = counts.sum()
    radius = np.array([bernstein_radius(n, qi, len(q)) for qi in q])
    dev = np.abs(obs - n * q)
    worst = int(np.argmax(dev / radius))
    msg = f"bin {worst}: observed {obs[worst]:.0f}, expected {n * q[worst]:.1f} +- {radius[worst]:.1f}"
    return bool((dev <= radius).all()), msg


def first_tokens(model, prompt, seeds, **options):
    return np.array(
        [model.generate_ids([prompt], max_new_tokens=1, seed=s, do_sample=True, **options)[0][0] for s in seeds]
    )


def next_logits(model, prompt):
    if model.is_encoder_decoder:
        start = model.generation_config.get("decoder_start_token_id", 0)
        return model.logits([prompt], decoder_input_ids=[[start]])[0, -1]
    return model.logits([prompt])[0, -1]


CHECKS = [
    # (id, model, prompt, fasttx options (transformers' names), wrong distributions to reject)
    ("temperature", DECODER, PROMPTS[0], dict(temperature=1.3, top_k=0),
     {"no temperature": dict(top_k=0)}),
    ("top_k", DECODER, PROMPTS[0], dict(temperature=0.7, top_k=5),
     {"no temperature": dict(top_k=5), "top_k 6": dict(temperature=0.7, top_k=6)}),
    ("top_p", DECODER, PROMPTS[0], dict(temperature=1.5, top_k=0, top_p=0.8),
     {"top_p before temperature": "top_p_first", "no top_p": dict(temperature=1.5, top_k=0)}),
    ("min_p", DECODER, PROMPTS[1], dict(temperature=1.2, top_k=0, min_p=0.1),
     {"no temperature": dict(top_k=0, min_p=0.1), "no min_p": dict(temperature=1.2, top_k=0)}),
    ("default_top_k_50", DECODER, PROMPTS[3], dict(temperature=2.0),
     {"no top_k": dict(temperature=2.0, top_k=0)}),
    ("combined", DECODER, PROMPTS[0], dict(temperature=0.9, top_k=12, top_p=0.85, min_p=0.05),
     {"no temperature": dict(top_k=12, top_p=0.85, min_p=0.05)}),
    ("t5_top_p", T5, T5_PROMPTS[0], dict(temperature=0.6, top_k=0, top_p=0.9),
     {"no temperature": dict(top_k=0, top_p=0.9)}),
    # The processors before the warpers. Token 5 (an EOS id) is likely here and in the prompt.
    ("repetition_penalty", DECODER, [1, 17, 42, 99, 7, 5], dict(top_k=0, repetition_penalty=1.5),
     {"no penalty": dict(top_k=0)}),
    # EOS ids 2 and 5 hold about 38% here; min_new_tokens=1 forbids them at the first step.
    ("min_new_tokens", DECODER, [1, 17, 42, 99, 7, 9], dict(top_k=0, temperature=0.9, min_new_tokens=1),
     {"EOS allowed": dict(top_k=0, temperature=0.9)}),
]  # fmt: skip

def _expected(logits, options, prompt, eos):
    """transformers' RepetitionPenaltyLogitsProcessor and MinNewTokensLengthLogitsProcessor (first
    step: nothing generated yet), then the warpers."""
    opts = dict(options)
    opts.setdefault("top_k", 50)  # transformers' default, as fasttx applies it
    s = np.asarray(logits, dtype=np.float64).copy()
    penalty = opts.pop("repetition_penalty", 1.0)
    if penalty != 1.0:
        seen = sorted(set(prompt))
        s[seen] = np.where(s[seen] < 0, s[seen] * penalty, s[seen] / penalty)
    if opts.pop("min_new_tokens", 0) > 0:
        s[eos] = -np.inf
    return warped_probs(s, **opts)


@pytest.mark.parametrize("check", CHECKS, ids=[c[0] for c in CHECKS])
def test_draws_follow_the_warped_distribution(models, check):
    _, name, prompt, options, wrong = check
    m = models[(name, 2)]
    logits = next_logits(m, prompt)
    eos = np.atleast_1d(m.generation_config["eos_token_id"]).tolist()
    probs = _expected(logits, options, prompt, eos)
    tokens = first_tokens(m, prompt, range(N), **options)
    counts = np.bincount(tokens, minlength=len(probs))
    outside = np.flatnonzero((counts > 0) & (probs == 0))
    assert len(outside) == 0, f"drew tokens the warpers remove: {outside.tolist()}"
    ok, msg = within_bounds(counts, probs)
    assert ok, f"frequencies off the expected distribution: {msg}"
    # The same draws must tell a wrong distribution apart.
    for label, alt in wrong.items():
        if alt == "top_p_first":  # nucleus of the untempered distribution, then the temperature
            keep = warped_probs(logits, top_p=options["top_p"]) > 0
            bad = _softmax(np.where(keep, logits.astype(np.float64) / options["temperature"], -np.inf))
        else:
            bad = _expected(logits, alt, prompt, eos)
        assert not np.allclose(bad, probs), label
        support_differs = bool(((counts > 0) & (bad == 0)).any())
        ok_bad, _ = within_bounds(counts, bad) if not support_differs else (False, "")
        assert not ok_bad, f"the check cannot tell the wrong distribution '{label}' apart"


def test_sequences_are_independent_draws(models):
    """num_return_sequences draws its sequences from separate streams: N sequences of one call
    pass the same distribution check as N seeds."""
    m = models[(DECODER, 2)]
    options = dict(temperature=1.3, top_k=0)
    probs = _expected(next_logits(m, PROMPTS[0]), options, PROMPTS[0], [])
    out = m.generate_ids([PROMPTS[0]], max_new_tokens=1, do_sample=True, seed=11, num_return_sequences=N, **options)
    counts = np.bincount([s[0] for s in out], minlength=len(probs))
    ok, msg = within_bounds(counts, probs)
    assert ok, msg


def test_bernstein_radius_is_conservative():
    """Sanity check of the bound on simulated binomial counts (numpy's generator, not fasttx's):
    with a generous failure probability (1e-2) it must essentially never fire in 2000 trials."""
    rng = np.random.default_rng(0)
    q = np.array([0.4, 0.3, 0.2, 0.1])
    obs = rng.multinomial(N, q, size=2000)
    radius = np.array([bernstein_radius(N, qi, len(q), fail_prob=1e-2) for qi in q])
    fails = (np.abs(obs - N * q) > radius).any(axis=1).mean()
    assert fails <= 1e-2


# --------------------------------------------------------------------------------------------
# Beam sampling (num_beams > 1 with do_sample): candidates drawn without replacement


@pytest.mark.parametrize("name", [DECODER, T5])
def test_beam_sampling_is_seeded(models, name):
    m = models[(name, 2)]
    prompts = PROMPTS if name == DECODER else T5_PROMPTS
    opts = dict(do_sample=True, num_beams=3, num_return_sequences=2, max_new_tokens=6, top_k=0, temperature=1.5)
    first = m.generate_ids(prompts, seed=4, **opts)
    assert len(first) == 2 * len(prompts)
    assert first == m.generate_ids(prompts, seed=4, **opts)
    assert first == models[(name, 1)].generate_ids(prompts, seed=4, **opts)
    assert [m.generate_ids([p], seed=4, **opts) for p in prompts] == [first[2 * i : 2 * i + 2] for i in range(len(prompts))]
    assert any(m.generate_ids(prompts, seed=s, **opts) != first for s in (5, 6, 7))


@pytest.mark.parametrize("name", ["t5_v1_0", "llama_gqa"])
def test_cold_beam_sampling_is_transformers_beam_search(name):
    """At a temperature near 0 the warped scores are the beam scores times 1/T: every ranking and
    length-penalty comparison of beam search is unchanged and the sampling noise is negligible
    against the gaps, so beam sampling returns transformers' beam-search hypotheses."""
    import json

    import fasttx

    model = fasttx.load(FIXTURES / name, threads=2)
    cases = json.loads((FIXTURES / name / "expected.json").read_text())["generate"]
    beam = [c for c in cases if c["options"].get("num_beams", 1) > 1]
    assert beam
    for c in beam:
        got = model.generate_ids(c["input_ids"], do_sample=True, temperature=1e-4, top_k=0, seed=0, **c["options"])
        assert got == c["sequences"], c["name"]
