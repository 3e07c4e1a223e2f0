"""``renormalize_logits`` natively (``NativeModel.log_softmax_rows``, used by
``processors.renormalize``) against the numpy log-softmax it replaced: equal but for the rounding
of each row's log-sum-exp (one float32 unit in the last place). transformers' own values are
checked in ``test_processors13.py`` (``LogitNormalization`` in the ``scores`` cases)."""

from __future__ import annotations

import numpy as np
import pytest

from fasttx.generation import processors


def numpy_renormalize(scores: np.ndarray) -> np.ndarray:
    """The numpy version ``processors.renormalize`` had before it went native (verbatim)."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32, copy=False)


@pytest.fixture(scope="module")
def native(load_fixture_model):
    return load_fixture_model("t5_v1_0")._native


def marian_like_scores(rows: int, vocab: int = 58101) -> np.ndarray:
    """Log-probabilities of a Marian-sized vocabulary with the pad (last) and EOS (0) banned, as
    beam search hands them to the renormalization."""
    rng = np.random.default_rng(rows)
    logits = rng.standard_normal((rows, vocab)).astype(np.float32) * 3
    scores = numpy_renormalize(logits)
    scores[:, [0, vocab - 1]] = -np.inf
    return scores


@pytest.mark.parametrize("rows", [1, 4, 32])
def test_native_renormalize_is_the_numpy_one(native, rows):
    scores = marian_like_scores(rows)
    got = processors.renormalize(scores.copy(), native)
    want = numpy_renormalize(scores)
    assert got.dtype == np.float32 and got.shape == scores.shape
    banned = np.isneginf(want)
    assert np.array_equal(np.isneginf(got), banned)
    # Each entry is (x - max) - lse: the same max and subtractions, in float32, in both. The
    # log-sum-exp, one number per row, is summed in f64 natively and with numpy's float32
    # pairwise sum, so it may round to the neighbouring float32; entries then differ by that one
    # unit in the last place and no more.
    np.testing.assert_array_max_ulp(got[~banned], want[~banned], maxulp=1)


def test_renormalize_edge_rows(native):
    # A row banned but for one token: that token's log-probability is 0 exactly.
    scores = np.full((2, 5), -np.inf, dtype=np.float32)
    scores[0, 2] = -3.5
    scores[1] = [0.0, 1.0, 2.0, 3.0, 4.0]
    got = processors.renormalize(scores, native)
    assert got[0, 2] == 0.0 and np.isneginf(np.delete(got[0], 2)).all()
    np.testing.assert_array_max_ulp(got[1], numpy_renormalize(scores[1:])[0], maxulp=1)
    # Non-contiguous and float64 input are taken as float32 rows; no vocabulary, no rows: as given.
    wide = np.arange(20, dtype=np.float64).reshape(2, 10)[:, ::2]
    assert processors.renormalize(wide, native).shape == (2, 5)
    assert processors.renormalize(np.zeros((3, 0), dtype=np.float32), native).shape == (3, 0)
    assert processors.renormalize(np.zeros((0, 7), dtype=np.float32), native).shape == (0, 7)
