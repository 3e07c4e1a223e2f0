"""``fasttx bench``: the harness's pure parts, argument parsing and the worker protocol, without
torch, transformers, ctranslate2 or llama_cpp (the benchmarks themselves are run by hand, see
BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from fasttx import bench
from fasttx.bench import harness, scaling, smollm2, t5

# ---------------------------------------------------------------------------------------- summaries


def test_summarize_median_min_max():
    cell = {"seconds": [2.0, 1.0, 4.0], "tokens": [64, 64, 64], "ttft_s": [0.1, 0.3, 0.2]}
    s = harness.summarize(cell)
    # tokens/s per repeat: 32, 64, 16
    assert s == pytest.approx({
        "tokens_per_s_median": 32.0, "tokens_per_s_min": 16.0, "tokens_per_s_max": 64.0,
        "ttft_ms_median": 200.0, "ttft_ms_min": 100.0, "ttft_ms_max": 300.0,
    })
    assert "decode_tokens_per_s_median" not in s


def test_summarize_even_count_and_batch_tokens():
    # Batch 8 x 64 tokens: 512 tokens per call; the median of an even count is the mean of the two middle ones.
    cell = {"seconds": [1.0, 2.0, 4.0, 8.0], "tokens": [512] * 4, "ttft_s": [0.5, 0.25, 1.0, 2.0]}
    s = harness.summarize(cell)
    assert s["tokens_per_s_median"] == pytest.approx((256 + 128) / 2)
    assert (s["tokens_per_s_min"], s["tokens_per_s_max"]) == (64.0, 512.0)
    assert s["ttft_ms_median"] == pytest.approx(750.0)


def test_summarize_decode_rate():
    # (128 - 1) / (t_128 - t_1) per repeat: 127/1.9, 127/1.27 = 100, 127/2.54 = 50 -> median 127/1.9
    cell = {"seconds": [2.0, 1.5, 3.0], "tokens": [128] * 3, "ttft_s": [0.1, 0.23, 0.46]}
    s = harness.summarize(cell, decode_rate=True)
    assert s["decode_tokens_per_s_median"] == pytest.approx(127 / 1.9)
    assert s["tokens_per_s_median"] == pytest.approx(64.0)


def test_summarize_decode_rate_of_a_batch():
    # Batch 8 x 64 tokens: (512 - 8) / (t_64 - t_1), the 1-token call having made 8 tokens.
    cell = {"seconds": [1.0, 2.0, 3.0], "tokens": [512] * 3, "ttft_s": [0.1, 0.2, 0.3], "first_tokens": [8] * 3}
    s = harness.summarize(cell, decode_rate=True)
    assert s["decode_tokens_per_s_median"] == pytest.approx(504 / 1.8)


def test_summarize_without_timings_is_none():
    assert harness.summarize({"seconds": [], "tokens": [], "ttft_s": []}) is None
    assert harness.summarize({"error": "boom"}) is None


# ----------------------------------------------------------------------------------------- tables


def _runtime(load_s, rss_mb, workloads):
    return {"import_s": 0.1, "load_s": load_s, "peak_rss_mb": rss_mb, "versions": {}, "workloads": workloads}


def _cell(tps, lo, hi, ttft_ms, decode=None):
    s = {"tokens_per_s_median": tps, "tokens_per_s_min": lo, "tokens_per_s_max": hi,
         "ttft_ms_median": ttft_ms, "ttft_ms_min": ttft_ms, "ttft_ms_max": ttft_ms}
    if decode is not None:
        s["decode_tokens_per_s_median"] = decode
    return {"summary": s}


def test_t5_markdown_table_with_ratio_to_pytorch():
    report = {
        "workloads": ["greedy_b1", "beam4_b1"],
        "runtimes": {
            "fasttx": _runtime(0.01, 280.4, {"greedy_b1": _cell(40.0, 38.5, 41.25, 50.94),
                                              "beam4_b1": _cell(30.0, 29.0, 31.0, 55.0)}),
            "pytorch": _runtime(5.0, 1024.0, {"greedy_b1": _cell(10.0, 9.0, 11.0, 120.0),
                                               "beam4_b1": {"summary": None}}),
            "ctranslate2": _runtime(0.55, None, {"greedy_b1": _cell(50.0, 45.0, 55.0, 42.0),
                                                  "beam4_b1": _cell(20.0, 19.0, 21.0, 40.0)}),
        },
    }
    # Ratio columns for PyTorch and CTranslate2 f32 (CTranslate2 int8 took no part: no column).
    assert t5.BENCHMARK.table(report).splitlines() == [
        "| runtime | workload | new tokens/s median [min–max] | vs PyTorch | vs CT2 f32 | TTFT ms | load s | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| fasttx f32 | greedy_b1 | 40.0 [38.5–41.2] | 4.00× | 0.80× | 50.9 | 0.01 | 280 |",
        "| PyTorch fp32 | greedy_b1 | 10.0 [9.0–11.0] | 1.00× | 0.20× | 120.0 | 5.00 | 1024 |",
        "| CTranslate2 f32 | greedy_b1 | 50.0 [45.0–55.0] | 5.00× | 1.00× | 42.0 | 0.55 | – |",
        # no PyTorch result for beam4_b1: no PyTorch ratio, and no PyTorch row
        "| fasttx f32 | beam4_b1 | 30.0 [29.0–31.0] | – | 1.50× | 55.0 | 0.01 | 280 |",
        "| CTranslate2 f32 | beam4_b1 | 20.0 [19.0–21.0] | – | 1.00× | 40.0 | 0.55 | – |",
    ]


def test_smollm2_markdown_table_with_ratios_to_pytorch_and_llama_cpp():
    report = {
        "workloads": ["greedy_b1"],
        "runtimes": {
            "fasttx-q4_1": _runtime(0.05, 150.0, {"greedy_b1": _cell(60.0, 55.0, 62.0, 30.0, decode=64.0)}),
            "pytorch": _runtime(4.0, 900.0, {"greedy_b1": _cell(20.0, 19.0, 21.0, 80.0, decode=21.5)}),
            "llama.cpp": _runtime(0.2, 200.0, {"greedy_b1": _cell(80.0, 79.0, 81.0, 25.0, decode=None)}),
        },
        "agreement_with_pytorch": {
            "fasttx-q4_1/greedy_b1": {"identical_sequences": 0, "of": 1,
                                      "matching_leading_tokens": [37], "of_tokens": [128]},
            "llama.cpp/greedy_b1": {"identical_sequences": 1, "of": 1,
                                    "matching_leading_tokens": [128], "of_tokens": [128]},
        },
    }
    assert smollm2.BENCHMARK.table(report).splitlines() == [
        "| runtime | new tokens/s median [min–max] | vs PyTorch | vs llama.cpp | decode tokens/s | TTFT ms "
        "| load s | peak RSS MB | tokens = PyTorch fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| fasttx Q4_1 (native) | 60.0 [55.0–62.0] | 3.00× | 0.75× | 64.0 | 30.0 | 0.05 | 150 | 37/128 |",
        "| PyTorch fp32 | 20.0 [19.0–21.0] | 1.00× | 0.25× | 21.5 | 80.0 | 4.00 | 900 | (reference) |",
        "| llama.cpp Q4_1 | 80.0 [79.0–81.0] | 4.00× | 1.00× | – | 25.0 | 0.20 | 200 | 128/128 |",
    ]


def test_ratio_formatting():
    assert harness.ratio(62.1, 68.5) == "0.91×"
    assert harness.ratio(5.0, None) == "–"
    assert harness.ratio(5.0, 0.0) == "–"


# ------------------------------------------------------------------------------------- agreement


def test_agreement_counts_leading_tokens_and_warns_on_f32_mismatch():
    results = {
        "pytorch": {"greedy_b1": {"sequences": [[1, 2, 3, 4]]}},
        "fasttx-f32": {"greedy_b1": {"sequences": [[1, 2, 3, 4]]}},
        "llama.cpp": {"greedy_b1": {"sequences": [[1, 2, 9, 4]]}},
    }
    warnings: list = []
    got = smollm2.BENCHMARK.check_agreement(results, ["greedy_b1"], warnings)
    assert got == {
        "fasttx-f32/greedy_b1": {"identical_sequences": 1, "of": 1, "matching_leading_tokens": [4], "of_tokens": [4]},
        "llama.cpp/greedy_b1": {"identical_sequences": 0, "of": 1, "matching_leading_tokens": [2], "of_tokens": [4]},
    }
    assert warnings == []

    results["fasttx-f32"]["greedy_b1"]["sequences"] = [[1, 5, 3, 4]]
    got = smollm2.BENCHMARK.check_agreement(results, ["greedy_b1"], warnings)
    assert got["fasttx-f32/greedy_b1"]["matching_leading_tokens"] == [1]
    assert warnings == ["WARNING: fasttx-f32 greedy_b1 tokens differ from transformers'"]


def test_q4_1_runtimes_compared_with_each_other():
    results = {
        "fasttx-q4_1": {"greedy_b1": {"sequences": [[1, 2, 3, 4, 5]]}},
        "llama.cpp": {"greedy_b1": {"sequences": [[1, 2, 3, 0, 5]]}},
    }
    assert smollm2.BENCHMARK.extra_checks(results, ["greedy_b1"]) == {
        "fasttx_q4_1_vs_llama_cpp_leading_tokens": {"greedy_b1": [[3, 5]]}}
    del results["llama.cpp"]
    assert smollm2.BENCHMARK.extra_checks(results, ["greedy_b1"]) == {}


def test_t5_agreement_keeps_its_json_shape():
    results = {
        "pytorch": {"greedy_b8": {"sequences": [[1], [2], [3]]}, "greedy_b1": {"sequences": [[5, 6]]}},
        "fasttx": {"greedy_b8": {"sequences": [[1], [0], [3]]}, "greedy_b1": {"sequences": [[5, 6]]}},
    }
    warnings: list = []
    got = t5.BENCHMARK.check_agreement(results, ["greedy_b1", "greedy_b8"], warnings)
    assert got == {"fasttx/greedy_b1": {"identical_sequences": 1, "of": 1},
                   "fasttx/greedy_b8": {"identical_sequences": 2, "of": 3}}
    assert warnings == []


def test_rotating_start_and_length_checks():
    assert [harness.rotated(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert harness.length_problems([[1, 2], [3, 4]], 2, 2) == []
    assert harness.length_problems([[1, 2, 3]], 2, 2) == [
        "1 sequences instead of 2", "sequence lengths [3] instead of 2"]


# ------------------------------------------------------------------------------ argument parsing


def test_parse_t5_subset():
    args = bench.parse_args(["t5", "--threads", "3", "--repeats", "1", "--workloads", "greedy_b1,beam4_b1",
                             "--runtimes", "fasttx", "--out", "x.json"])
    assert args.benchmark == "t5"
    assert (args.threads, args.repeats, args.out) == (3, 1, "x.json")
    assert args.workloads == ["greedy_b1", "beam4_b1"]
    assert args.runtimes == ["fasttx"]
    assert args.new_tokens == 64
    assert args.model_dir.is_absolute() and args.model_dir.name == "t5-small-random"


def test_parse_smollm2_defaults():
    args = bench.parse_args(["smollm2", "--threads", "2"])
    assert args.benchmark == "smollm2"
    assert args.runtimes == ["fasttx-q4_1", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp"]
    assert args.workloads == ["greedy_b1"]
    assert (args.new_tokens, args.repeats, args.out, args.gguf) == (128, 5, "BENCHMARKS-smollm2.json", None)


def test_parse_all_runs_every_benchmark(tmp_path):
    args = bench.parse_args(["all", "--threads", "2", "--repeats", "3", "--out-dir", str(tmp_path),
                             "--gguf", "/m/smol.gguf"])
    assert [name for name, _ in args.plan] == ["t5", "smollm2", "scaling"]
    (_, t5_args), (_, smol_args), (_, scale_args) = args.plan
    assert (t5_args.threads, t5_args.repeats, t5_args.out) == (2, 3, str(tmp_path / "t5.json"))
    assert t5_args.workloads == ["greedy_b1", "beam4_b1", "greedy_b8"]
    assert (smol_args.threads, smol_args.repeats, smol_args.out) == (2, 3, str(tmp_path / "smollm2.json"))
    assert smol_args.gguf == "/m/smol.gguf"
    assert smol_args.llama_cpp_no_repack is False
    # Scaling after them: 1 up to --threads, same repeats, the T5 model directory.
    assert (scale_args.threads, scale_args.threads_list, scale_args.repeats) == (2, [1, 2], 3)
    assert scale_args.out == str(tmp_path / "scaling.json")
    assert scale_args.model_dir == t5_args.model_dir
    for a in (t5_args, smol_args, scale_args):
        assert (a.bandwidth_mb, a.no_chart) == (1536, False)
    args = bench.parse_args(["all", "--llama-cpp-no-repack", "--threads", "6", "--bandwidth-mb", "0", "--no-chart"])
    assert args.plan[1][1].llama_cpp_no_repack is True
    assert args.plan[2][1].threads_list == [1, 2, 4, 6]
    assert all(a.bandwidth_mb == 0 and a.no_chart for _, a in args.plan)


@pytest.mark.parametrize("argv", [[], ["t5", "--workloads", "greedy_b2"], ["smollm2", "--runtimes", "onnx"],
                                  ["bert"], ["t5", "--bandwidth-mb", "-1"], ["scaling", "--threads-list", "0,2"],
                                  ["scaling", "--threads-list", "two"], ["scaling", "--runtimes", "llama.cpp"],
                                  ["scaling", "--threads", "2", "--threads-list", "1,2"], ["scaling", "--threads", "0"]])
def test_parse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_cli_routes_bench_to_the_package():
    proc = subprocess.run([sys.executable, "-m", "fasttx", "bench", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "{t5,smollm2,scaling,all}" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fasttx", "bench", "t5", "--workloads", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown workload 'nope'" in proc.stderr


# ------------------------------------------------------------------------- skipping, workers


def test_missing_runtime_is_skipped(capsys):
    class Fake(harness.Benchmark):
        requires = {"here": ("json",), "absent": ("no_such_module_for_fasttx_bench",), "free": ()}

    skipped: dict = {}
    keep = harness.available_runtimes(Fake(), ["here", "absent", "free"], skipped)
    assert keep == ["here", "free"]
    assert skipped == {"absent": "not installed: import no_such_module_for_fasttx_bench failed"}
    assert "SKIP absent: not installed" in capsys.readouterr().out


def test_llama_cpp_skipped_when_not_importable(monkeypatch):
    real = harness.missing_modules
    monkeypatch.setattr(harness, "missing_modules", lambda mods: ["llama_cpp"] if "llama_cpp" in mods else real(mods))
    skipped: dict = {}
    keep = harness.available_runtimes(smollm2.BENCHMARK, ["fasttx-q4_1", "llama.cpp"], skipped)
    assert keep == ["fasttx-q4_1"]
    assert skipped == {"llama.cpp": "not installed: import llama_cpp failed"}


def test_package_imports_without_runtime_libraries():
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'ctranslate2', 'llama_cpp', 'accelerate'):\n"
        "    sys.modules[m] = None  # any import of them now raises ImportError\n"
        "import fasttx.bench\n"
        "a = fasttx.bench.parse_args(['smollm2', '--threads', '1'])\n"
        "print(a.runtimes)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['fasttx-q4_1', 'fasttx-int8', 'fasttx-f32', 'pytorch', 'llama.cpp']"


def test_worker_commands():
    args = Namespace(threads=2, model_dir=Path("/m/t5"), gguf=Path("/m/s.gguf"), llama_cpp_no_repack=False)
    cmd = harness.worker_command(t5.BENCHMARK, "fasttx", args)
    assert cmd == [sys.executable, "-m", "fasttx.bench", "t5", "--worker", "fasttx",
                   "--model-dir", "/m/t5", "--threads", "2"]
    cmd = harness.worker_command(smollm2.BENCHMARK, "llama.cpp", args)
    assert cmd[:2] == [sys.executable, "-c"] and cmd[2] == harness._STUB_BOOTSTRAP
    assert cmd[3:] == [str(harness.PACKAGE_ROOT / "fasttx"), "smollm2", "--worker", "llama.cpp",
                       "--gguf", "/m/s.gguf", "--threads", "2"]
    args.llama_cpp_no_repack = True
    assert harness.worker_command(smollm2.BENCHMARK, "llama.cpp", args)[-1] == "--llama-cpp-no-repack"


def test_stub_bootstrap_does_not_load_fasttx_native():
    check = "import fasttx.bench.smollm2\nprint(sorted(m for m in ('fasttx._native', 'numpy', 'tokenizers') if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", harness._STUB_PREAMBLE + check, str(harness.PACKAGE_ROOT / "fasttx")],
                          capture_output=True, text=True, timeout=60, check=False, env=harness.worker_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_failing_workers_are_skipped(tmp_path, capsys):
    fails = "import json; print(json.dumps({'error': 'Traceback ...\\nModuleNotFoundError: No module named llama_cpp'}))"
    dies = "import sys; sys.exit(3)"
    cmds = {"fails": [sys.executable, "-c", fails], "dies": [sys.executable, "-c", dies]}
    skipped: dict = {}
    workers = harness.start_workers(["fails", "dies"], cmds.__getitem__, tmp_path, skipped)
    assert workers == {}
    assert skipped["fails"].splitlines()[-1] == "ModuleNotFoundError: No module named llama_cpp"
    assert skipped["dies"].startswith("dies worker died (exit status 3;")
    out = capsys.readouterr().out
    assert "SKIP fails: ModuleNotFoundError: No module named llama_cpp" in out


FAKE_WORKER = '''
import sys
from fasttx.bench import harness

class Echo:
    @staticmethod
    def versions():
        return {"echo": "1"}

    def prepare(self, ids):
        return ids

    def generate(self, prepared, options):
        return [[row[0] + 1] * options["max_new_tokens"] for row in prepared]

class Fake(harness.Benchmark):
    name = "fake"

    def runtime_class(self, runtime):
        return Echo

    def make_runtime(self, runtime, args):
        return Echo()

harness.worker_main(Fake(), sys.argv[1], None)
'''


def test_worker_protocol_and_schedule(tmp_path, monkeypatch):
    """Two fake runtimes through real worker processes: warm-up + 2 repeats, tokens counted."""
    monkeypatch.setattr(harness, "SETTLE_S", 0.0)
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)

    class Parent(harness.Benchmark):
        workloads = {"w": {"batch": 2}}

        def workload_inputs(self, workload, pool):
            return pool

        def options(self, workload, new_tokens):
            return {"max_new_tokens": new_tokens}

    skipped: dict = {}
    workers = harness.start_workers(["a", "b"], lambda rt: [sys.executable, str(script), rt], tmp_path, skipped)
    assert skipped == {} and list(workers) == ["a", "b"]
    assert workers["a"].ready["versions"] == {"echo": "1"}
    results = {rt: {"w": {"seconds": [], "tokens": [], "ttft_s": [], "first_tokens": []}} for rt in workers}
    warnings: list = []
    probes: list = []
    harness.run_schedule(Parent(), workers, ["w"], [[10], [20]], 2, 3, results, warnings,
                         after_repeat=lambda: probes.append(len(results["a"]["w"]["seconds"])))
    assert probes == [1, 2]  # after each repeat, once its timings are in
    rss = {rt: w.close()["maxrss_kb"] for rt, w in workers.items()}
    assert warnings == []
    for rt in ("a", "b"):
        cell = results[rt]["w"]
        assert cell["sequences"] == [[11, 11, 11], [21, 21, 21]]
        assert cell["tokens"] == [6, 6]  # 2 rows x 3 new tokens, per repeat
        assert len(cell["seconds"]) == len(cell["ttft_s"]) == 2
        assert cell["first_tokens"] == [2, 2]  # the 1-token call: one per row
        assert rss[rt] > 1000  # KiB: a Python interpreter at least
    assert json.loads(json.dumps(results))  # everything is JSON-serialisable


# ------------------------------------------------------------------- memory bandwidth ceiling


def _bandwidth_report(bandwidth):
    """A T5 report: fasttx f32 / int8 measured bytes, PyTorch and CT2 int8 through counterparts."""
    return {
        "machine": {"memory_read_gb_per_s": bandwidth, "memory_bandwidth_mb": 1536, "threads": 2},
        "workloads": ["greedy_b1", "beam4_b1", "greedy_b8"],
        "runtimes": {
            "fasttx": {**_runtime(0.01, 280.0, {"greedy_b1": _cell(40.0, 38.0, 41.0, 50.0),
                                                 "beam4_b1": _cell(30.0, 29.0, 31.0, 55.0),
                                                 "greedy_b8": _cell(300.0, 290.0, 310.0, 90.0)}),
                       "decode_weight_bytes": 150_000_000, "decode_weight_bytes_from": "fasttx"},
            "fasttx-int8": {**_runtime(0.02, 250.0, {"greedy_b1": _cell(100.0, 99.0, 101.0, 20.0)}),
                            "decode_weight_bytes": 40_000_000, "decode_weight_bytes_from": "fasttx-int8"},
            "pytorch": {**_runtime(5.0, 1024.0, {"greedy_b1": _cell(10.0, 9.0, 11.0, 120.0)}),
                        "decode_weight_bytes": 150_000_000, "decode_weight_bytes_from": "fasttx"},
            "ctranslate2-int8": {**_runtime(0.7, 260.0, {"greedy_b1": _cell(50.0, 49.0, 51.0, 12.0)}),
                                 "decode_weight_bytes": None, "decode_weight_bytes_from": "fasttx-int8"},
        },
    }


def test_percent_of_bandwidth_t5():
    report = _bandwidth_report(20.0)
    b1 = t5.BENCHMARK.batch1_workloads()
    assert b1 == ["greedy_b1", "beam4_b1"]
    pct = lambda rt, wl: harness.percent_of_bandwidth(report, rt, wl, b1)  # noqa: E731
    # 40 tokens/s x 150 MB = 6 GB/s of 20 GB/s = 30%
    assert pct("fasttx", "greedy_b1") == pytest.approx(30.0)
    assert pct("fasttx", "beam4_b1") == pytest.approx(22.5)  # beam search: weights read once per step
    assert pct("fasttx-int8", "greedy_b1") == pytest.approx(20.0)
    assert pct("pytorch", "greedy_b1") == pytest.approx(7.5)
    assert pct("fasttx", "greedy_b8") is None  # batch 8: not a bandwidth ceiling
    assert pct("ctranslate2-int8", "greedy_b1") is None  # bytes unknown
    assert harness.bandwidth_percentages(report, b1) == pytest.approx({
        "fasttx/greedy_b1": 30.0, "fasttx/beam4_b1": 22.5, "fasttx-int8/greedy_b1": 20.0, "pytorch/greedy_b1": 7.5})
    assert harness.percent_of_bandwidth(_bandwidth_report(None), "fasttx", "greedy_b1", b1) is None


def test_percent_of_bandwidth_uses_the_decode_rate_when_there_is_one():
    report = {
        "machine": {"memory_read_gb_per_s": 25.0},
        "workloads": ["greedy_b1"],
        "runtimes": {
            "fasttx-q4_1": {**_runtime(0.05, 150.0, {"greedy_b1": _cell(60.0, 55.0, 62.0, 30.0, decode=64.0)}),
                            "decode_weight_bytes": 100_000_000},
            "llama.cpp": {**_runtime(0.2, 200.0, {"greedy_b1": _cell(80.0, 79.0, 81.0, 25.0, decode=None)}),
                          "decode_weight_bytes": 100_000_000, "decode_weight_bytes_from": "fasttx-q4_1"},
        },
    }
    b1 = smollm2.BENCHMARK.batch1_workloads()
    # 64 decode tokens/s x 100 MB / 25 GB/s = 25.6%; no decode rate: 80 tokens/s -> 32%
    assert harness.percent_of_bandwidth(report, "fasttx-q4_1", "greedy_b1", b1) == pytest.approx(25.6)
    assert harness.percent_of_bandwidth(report, "llama.cpp", "greedy_b1", b1) == pytest.approx(32.0)
    lines = smollm2.BENCHMARK.table(report).splitlines()
    # no PyTorch in this report: one ratio column (vs llama.cpp)
    assert lines[0].split(" | ")[3:6] == ["decode tokens/s", "% of bandwidth", "TTFT ms"]
    assert lines[2].split(" | ")[3:5] == ["64.0", "26%"]
    assert lines[3].split(" | ")[3:5] == ["–", "32%"]


def test_bandwidth_column_only_when_measured():
    with_bw = t5.BENCHMARK.table(_bandwidth_report(20.0)).splitlines()
    assert with_bw[0] == ("| runtime | workload | new tokens/s median [min–max] | vs PyTorch | vs CT2 int8 "
                          "| % of bandwidth | TTFT ms | load s | peak RSS MB |")
    assert with_bw[2] == "| fasttx f32 | greedy_b1 | 40.0 [38.0–41.0] | 4.00× | 0.80× | 30% | 50.0 | 0.01 | 280 |"
    assert with_bw[5] == "| CTranslate2 int8 | greedy_b1 | 50.0 [49.0–51.0] | 5.00× | 1.00× | – | 12.0 | 0.70 | 260 |"
    assert with_bw[6].startswith("| fasttx f32 | beam4_b1 | ") and "| 22% |" in with_bw[6]
    assert with_bw[7].startswith("| fasttx f32 | greedy_b8 | ") and "| – | 90.0 |" in with_bw[7]
    for report in (_bandwidth_report(None), {k: v for k, v in _bandwidth_report(20.0).items() if k != "machine"}):
        table = t5.BENCHMARK.table(report)
        assert "% of bandwidth" not in table
        assert table.splitlines()[2] == "| fasttx f32 | greedy_b1 | 40.0 [38.0–41.0] | 4.00× | 0.80× | 50.0 | 0.01 | 280 |"


def test_bandwidth_lines_under_the_table():
    lines = harness.bandwidth_lines(_bandwidth_report(20.0), t5.RUNTIME_LABELS, t5.BENCHMARK.bandwidth_note)
    assert lines[0] == "Memory read bandwidth: 20.0 GB/s (1536 MB buffer, 2 threads, best of several reads)"
    assert lines[1] == ("Weights read per batch-1 step: fasttx f32 150.0 MB, fasttx int8 40.0 MB, "
                        "PyTorch fp32 150.0 MB (as fasttx f32), CTranslate2 int8 unknown")
    assert lines[2].startswith("% of bandwidth = tokens/s x weight bytes per step / bandwidth, batch-1 workloads only; "
                               "T5 uses the decode tokens/s (the encoder and first step taken out)")
    report = _bandwidth_report(20.0)
    report["machine"]["memory_read_gb_per_s_probes"] = [21.0, 20.0, 19.5, 20.5]
    assert harness.bandwidth_lines(report, t5.RUNTIME_LABELS)[0] == (
        "Memory read bandwidth: 20.0 GB/s (1536 MB buffer, 2 threads, best of several reads; median of "
        "4 probes, before the run and after each repeat: 21.0, 20.0, 19.5, 20.5)")
    report = _bandwidth_report(None)
    report["machine"]["memory_bandwidth_skipped"] = "skipped (--bandwidth-mb 0)"
    lines = harness.bandwidth_lines(report, t5.RUNTIME_LABELS)
    assert lines[0] == "Memory read bandwidth: skipped (--bandwidth-mb 0); no % of bandwidth column"
    assert len(lines) == 2


def test_counterpart_weight_bytes():
    loads = []

    def load(rt):
        loads.append(rt)
        return {"fasttx-int8": 40_000_000, "fasttx-q4_1": None}.get(rt)

    b = t5.BENCHMARK
    assert b.weight_counterparts == {"pytorch": "fasttx", "ctranslate2": "fasttx", "ctranslate2-int8": "fasttx-int8"}
    assert b.fasttx_dtypes == {"fasttx": "auto", "fasttx-int8": "int8"}
    # fasttx f32 ran (its worker's number is used), fasttx int8 did not (loaded once, in the parent).
    got = harness.weight_bytes_per_runtime(
        ["fasttx", "pytorch", "ctranslate2", "ctranslate2-int8"], {"fasttx": 150_000_000},
        b.fasttx_dtypes, b.weight_counterparts, load)
    assert got == {
        "fasttx": {"bytes": 150_000_000, "from": "fasttx"},
        "pytorch": {"bytes": 150_000_000, "from": "fasttx"},
        "ctranslate2": {"bytes": 150_000_000, "from": "fasttx"},
        "ctranslate2-int8": {"bytes": 40_000_000, "from": "fasttx-int8"},
    }
    assert loads == ["fasttx-int8"]

    s = smollm2.BENCHMARK
    assert s.weight_counterparts == {"pytorch": "fasttx-f32", "llama.cpp": "fasttx-q4_1"}
    assert s.fasttx_dtypes == {"fasttx-q4_1": "auto", "fasttx-int8": "int8", "fasttx-f32": "f32"}
    loads.clear()
    got = harness.weight_bytes_per_runtime(
        ["fasttx-f32", "fasttx-int8", "pytorch", "llama.cpp", "unknown"],
        {"fasttx-f32": 538_000_000, "fasttx-int8": None}, s.fasttx_dtypes, s.weight_counterparts, load)
    assert got == {
        "fasttx-f32": {"bytes": 538_000_000, "from": "fasttx-f32"},
        "fasttx-int8": {"bytes": None, "from": "fasttx-int8"},  # an old build without the property
        "pytorch": {"bytes": 538_000_000, "from": "fasttx-f32"},
        "llama.cpp": {"bytes": None, "from": "fasttx-q4_1"},  # could not be loaded
        "unknown": {"bytes": None, "from": None},
    }
    assert loads == ["fasttx-q4_1"]


def test_decode_weight_bytes_of_a_model():
    assert harness.decode_weight_bytes(Namespace(_native=Namespace(decode_weight_bytes=123))) == 123
    assert harness.decode_weight_bytes(Namespace(_native=Namespace())) is None


def test_measure_memory_bandwidth(monkeypatch):
    assert harness.measure_memory_bandwidth(2, 0) == (None, "skipped (--bandwidth-mb 0)")
    native = pytest.importorskip("fasttx._native", reason="fasttx's native module is not built")
    calls = []

    def fake(threads, megabytes=1024):
        calls.append((threads, megabytes))
        return 31.5

    monkeypatch.setattr(native, "memory_bandwidth", fake, raising=False)
    assert harness.measure_memory_bandwidth(2, 1536) == (31.5, "")
    assert calls == [(2, 1536)]
    monkeypatch.delattr(native, "memory_bandwidth")
    bw, why = harness.measure_memory_bandwidth(2, 1536)
    assert bw is None and "no memory_bandwidth" in why


# ---------------------------------------------------------------------------------------- charts


def test_chart_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the chart is optional and skipped")
    report = {**_bandwidth_report(20.0), "benchmark": "t5", "date": "2026-12-01T10:00:00+00:00"}
    report["machine"]["cpu"] = "Test CPU"
    path, why = harness.write_chart(report, harness.chart_path(tmp_path / "t5.json"), t5.RUNTIME_LABELS)
    assert (path, why) == (tmp_path / "t5.png", "")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert harness.chart_title(report) == "fasttx bench t5: Test CPU, 2 threads, 2026-12-01"

    path, why = scaling.write_scaling_chart(_scaling_report(), tmp_path / "scaling.png")
    assert why == "" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_skipped_without_matplotlib(tmp_path, monkeypatch):
    def no_matplotlib():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(harness, "_figure", no_matplotlib)
    path, why = harness.write_chart(_bandwidth_report(20.0), tmp_path / "x.png", {})
    assert path is None and why.startswith("matplotlib is not installed")
    assert not (tmp_path / "x.png").exists()
    path, why = scaling.write_scaling_chart(_scaling_report(), tmp_path / "s.png")
    assert path is None and why.startswith("matplotlib is not installed")


def test_chart_path():
    assert harness.chart_path("results/t5.json") == Path("results/t5.png")
    assert harness.chart_path("t5") == Path("t5.png")


# --------------------------------------------------------------------------------- thread scaling


def _scaling_report():
    return {
        "benchmark": "scaling", "date": "2026-12-01T10:00:00+00:00", "machine": {"cpu": "Test CPU"},
        "thread_counts": [1, 2, 4],
        "tokens_per_s": {
            "fasttx": {"1": {"median": 100.0, "min": 99.0, "max": 101.0},
                       "2": {"median": 180.0, "min": 170.0, "max": 181.0},
                       "4": {"median": 250.0, "min": 240.0, "max": 260.0}},
            "pytorch": {"1": {"median": 50.0, "min": 49.0, "max": 51.0},
                        "4": {"median": 90.0, "min": 88.0, "max": 95.0}},
            "ctranslate2": {"2": {"median": 70.0, "min": 69.0, "max": 71.0}},
            "ctranslate2-int8": {},  # skipped everywhere: no row
        },
        "memory_read_gb_per_s": {"1": 10.0, "2": 18.25, "4": None},
    }


def test_scaling_table():
    assert scaling.scaling_table(_scaling_report(), t5.RUNTIME_LABELS).splitlines() == [
        "| runtime | 1 thread | 2 threads | 4 threads | speedup 1→4 |",
        "| --- | --- | --- | --- | --- |",
        "| fasttx f32 | 100.0 | 180.0 | 250.0 | 2.50× |",
        "| PyTorch fp32 | 50.0 | – | 90.0 | 1.80× |",
        "| CTranslate2 f32 | – | 70.0 | – | – |",
    ]
    one = {**_scaling_report(), "thread_counts": [2]}
    assert scaling.scaling_table(one, t5.RUNTIME_LABELS).splitlines()[:3] == [
        "| runtime | 2 threads |", "| --- | --- |", "| fasttx f32 | 180.0 |"]
    assert scaling.bandwidth_line(_scaling_report()) == "Memory read bandwidth (GB/s) by threads: 1 thr 10.0, 2 thr 18.2"


def test_default_thread_list():
    assert scaling.default_thread_list(1) == [1]
    assert scaling.default_thread_list(2) == [1, 2]
    assert scaling.default_thread_list(6) == [1, 2, 4, 6]
    assert scaling.default_thread_list(8) == [1, 2, 4, 8]
    assert scaling.parse_thread_list("4,1,2,2") == [1, 2, 4]


def test_parse_scaling():
    args = bench.parse_args(["scaling", "--threads-list", "2,1", "--runtimes", "fasttx,ctranslate2",
                             "--repeats", "2", "--out", "s.json"])
    assert args.benchmark == "scaling"
    assert (args.threads_list, args.runtimes, args.repeats, args.out) == ([1, 2], ["fasttx", "ctranslate2"], 2, "s.json")
    assert (args.new_tokens, args.bandwidth_mb, args.no_chart) == (64, 1536, False)
    assert bench.parse_args(["scaling", "--threads", "6"]).threads_list == [1, 2, 4, 6]
    args = bench.parse_args(["scaling"])
    assert args.threads_list == scaling.default_thread_list(harness.default_threads())
    assert args.runtimes == ["fasttx", "fasttx-int8", "pytorch", "ctranslate2", "ctranslate2-int8"]
    assert (args.repeats, args.out) == (3, "BENCHMARKS-scaling.json")
    assert scaling.t5_argv(args, 4, Path("/tmp/t.json")) == [
        "--workloads", "greedy_b1", "--threads", "4",
        "--runtimes", "fasttx,fasttx-int8,pytorch,ctranslate2,ctranslate2-int8",
        "--repeats", "3", "--new-tokens", "64", "--model-dir", str(args.model_dir),
        "--bandwidth-mb", "1536", "--out", "/tmp/t.json", "--no-chart"]


def test_scaling_run_collects_each_thread_count(tmp_path, monkeypatch, capsys):
    """The scaling run with the T5 runs replaced by canned reports."""
    calls = []

    def fake_run_t5(argv):
        threads = int(argv[argv.index("--threads") + 1])
        calls.append(threads)
        report = {
            "machine": {"memory_read_gb_per_s": 10.0 * threads},
            "runtimes": {
                "fasttx": _runtime(0.01, 280.0, {"greedy_b1": _cell(100.0 * threads, 90.0, 300.0, 50.0)}),
                "pytorch": _runtime(5.0, 1000.0, {"greedy_b1": {"summary": None, "error": "boom"}}),
            },
            "skipped": {"ctranslate2": "not installed"},
            "warnings": ["pytorch greedy_b1: generate failed: boom"],
        }
        return 0, report

    monkeypatch.setattr(scaling, "run_t5", fake_run_t5)
    out = tmp_path / "scaling.json"
    args = bench.parse_args(["scaling", "--threads-list", "1,2", "--runtimes", "fasttx,pytorch,ctranslate2",
                             "--out", str(out), "--no-chart"])
    assert scaling.run(args) == 0
    assert calls == [1, 2]
    report = json.loads(out.read_text())
    assert report["thread_counts"] == [1, 2]
    assert report["tokens_per_s"] == {
        "fasttx": {"1": {"median": 100.0, "min": 90.0, "max": 300.0}, "2": {"median": 200.0, "min": 90.0, "max": 300.0}},
        "pytorch": {}, "ctranslate2": {}}
    assert report["memory_read_gb_per_s"] == {"1": 10.0, "2": 20.0}
    assert sorted(report["runs"]) == ["1", "2"] and report["chart"] is None
    assert report["warnings"] == ["1 threads: pytorch greedy_b1: generate failed: boom",
                                  "2 threads: pytorch greedy_b1: generate failed: boom"]
    printed = capsys.readouterr().out
    assert "| fasttx f32 | 100.0 | 200.0 | 2.00× |" in printed
    assert "chart: not written: skipped (--no-chart)" in printed


# ------------------------------------------------------------------------ a whole run, with fakes

FAKE_FASTTX_WORKER = '''
import sys
from fasttx.bench import harness

class Echo:
    def __init__(self, runtime):
        self.runtime = runtime

    @staticmethod
    def versions():
        return {"echo": "1"}

    def ready_info(self):
        return {"decode_weight_bytes": 2_000_000} if self.runtime == "fx" else {}

    def prepare(self, ids):
        return ids

    def generate(self, prepared, options):
        import time
        time.sleep(0.01)
        return [[row[0] + 1] * options["max_new_tokens"] for row in prepared]

class Fake(harness.Benchmark):
    def runtime_class(self, runtime):
        return Echo

    def make_runtime(self, runtime, args):
        return Echo(runtime)

harness.worker_main(Fake(), sys.argv[1], None)
'''


def test_run_records_bandwidth_bytes_and_chart(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "SETTLE_S", 0.0)
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_FASTTX_WORKER)
    monkeypatch.setattr(harness, "worker_command", lambda b, rt, args: [sys.executable, str(script), rt])
    monkeypatch.setattr(harness, "measure_memory_bandwidth", lambda threads, mb: (8.0, ""))
    loaded = []

    class Fake(harness.Benchmark):
        name = "fake"
        labels = {"fx": "FX", "other": "Other"}
        workloads = {"b1": {"batch": 1}, "b2": {"batch": 2}}
        fasttx_dtypes = {"fx": "auto", "fx-int8": "int8"}
        weight_counterparts = {"other": "fx", "other-int8": "fx-int8"}

        def inputs(self, args):
            return [[10], [20]]

        def workload_inputs(self, workload, pool):
            return pool[:self.workloads[workload]["batch"]]

        def options(self, workload, new_tokens):
            return {"max_new_tokens": new_tokens}

    monkeypatch.setattr(harness, "load_weight_bytes", lambda b, a, rt: loaded.append(rt) or 500_000)
    out = tmp_path / "r.json"
    args = Namespace(threads=1, repeats=1, out=str(out), runtimes=["fx", "other", "other-int8"],
                     workloads=["b1", "b2"], new_tokens=3, bandwidth_mb=64, no_chart=True)
    assert harness.run(Fake(), args) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["memory_read_gb_per_s"] == 8.0 and report["machine"]["memory_bandwidth_mb"] == 64
    rts = report["runtimes"]
    assert (rts["fx"]["decode_weight_bytes"], rts["fx"]["decode_weight_bytes_from"]) == (2_000_000, "fx")
    assert (rts["other"]["decode_weight_bytes"], rts["other"]["decode_weight_bytes_from"]) == (2_000_000, "fx")
    assert (rts["other-int8"]["decode_weight_bytes"], rts["other-int8"]["decode_weight_bytes_from"]) == (500_000, "fx-int8")
    assert loaded == ["fx-int8"]
    tps = rts["fx"]["workloads"]["b1"]["summary"]["tokens_per_s_median"]
    assert set(report["percent_of_bandwidth"]) == {"fx/b1", "other/b1", "other-int8/b1"}
    assert report["percent_of_bandwidth"]["fx/b1"] == pytest.approx(tps * 2e6 / 8e9 * 100)
    assert report["chart"] is None
    printed = capsys.readouterr().out
    assert "% of bandwidth" in printed
    assert ("Memory read bandwidth: 8.0 GB/s (64 MB buffer, 1 threads, best of several reads; median of 2 "
            "probes, before the run and after each repeat: 8.0, 8.0)") in printed
    assert report["machine"]["memory_read_gb_per_s_probes"] == [8.0, 8.0]
    assert "Weights read per batch-1 step: FX 2.0 MB, Other 2.0 MB (as FX), other-int8 0.5 MB (as fx-int8)" in printed

    if harness.importlib.util.find_spec("matplotlib") is not None:
        args.no_chart = False
        assert harness.run(Fake(), args) == 0
        assert json.loads(out.read_text())["chart"] == str(tmp_path / "r.png")
        assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
