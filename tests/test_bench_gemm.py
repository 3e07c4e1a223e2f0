"""``fasttx bench gemm`` (f32 matrix products against numpy's sgemm peak) and the native timing
it uses, ``fasttx._native.matmul_rate``: arguments, bad input, and a tiny whole run."""

from __future__ import annotations

import json

import pytest

from fasttx import _native, bench
from fasttx.bench import gemm


def test_matmul_rate_times_the_product():
    best, median = _native.matmul_rate(9, 70, 33, 1, 3)
    assert 0 < best <= median


@pytest.mark.parametrize("args", [(0, 8, 8, 1, 1), (8, 0, 8, 1, 1), (8, 8, 8, 1, 0), (8, 8, 8, 0, 1),
                                  (1 << 20, 1 << 20, 1, 1, 1)])
def test_matmul_rate_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        _native.matmul_rate(*args)


def test_gemm_is_a_subcommand_but_not_part_of_all():
    args = bench.parse_args(["gemm", "--threads-list", "2,1", "--rows", "64,8", "--shapes", "square 1024"])
    assert (args.benchmark, args.thread_counts, args.rows) == ("gemm", [1, 2], [8, 64])
    assert args.shapes == [("square 1024", 1024, 1024)]
    assert "gemm" not in [name for name, _ in bench.parse_args(["all", "--threads", "1"]).plan]


@pytest.mark.parametrize("argv", [["gemm", "--rows", "0"], ["gemm", "--rows", "x"], ["gemm", "--shapes", "bert"],
                                  ["gemm", "--threads-list", "0"]])
def test_gemm_rejects_bad_options(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_gemm_run_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gemm, "PEAK_SIZES", (64, 96))
    monkeypatch.setattr(gemm, "TARGET_S", 0.01)
    out = tmp_path / "gemm.json"
    argv = ["gemm", "--threads-list", "1", "--rows", "1,64", "--shapes", "smollm2 ff->d", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    run = report["runs"]["1"]
    assert run["peak_gflops"] > 0 and len(run["peak_probes"]) == 2
    assert [(r["m"], r["k"], r["n"]) for r in run["rows"]] == [(1, 1536, 576), (64, 1536, 576)]
    assert all(r["gflops"] > 0 and r["percent_of_peak"] > 0 for r in run["rows"])
    for r in run["rows"]:  # the figures are the times' and the peak's, not made up elsewhere
        assert r["gflops"] == pytest.approx(2 * r["m"] * r["k"] * r["n"] / r["best_s"] / 1e9, rel=1e-6)
        assert r["percent_of_peak"] == pytest.approx(100 * r["gflops"] / run["peak_gflops"], rel=1e-6)
    assert run["peak_gflops"] == max(p["gflops"] for p in run["peak_probes"])
    assert report["summary"]["1"]["rows"] == "m >= 64"
    assert report["command"] and report["numpy_blas"]
    assert "% of peak" in capsys.readouterr().out
