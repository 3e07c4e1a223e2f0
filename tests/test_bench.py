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
from fasttx.bench import harness, smollm2, t5

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
    assert [name for name, _ in args.plan] == ["t5", "smollm2"]
    (_, t5_args), (_, smol_args) = args.plan
    assert (t5_args.threads, t5_args.repeats, t5_args.out) == (2, 3, str(tmp_path / "BENCHMARKS-t5.json"))
    assert t5_args.workloads == ["greedy_b1", "beam4_b1", "greedy_b8"]
    assert (smol_args.threads, smol_args.repeats, smol_args.out) == (2, 3, str(tmp_path / "BENCHMARKS-smollm2.json"))
    assert smol_args.gguf == "/m/smol.gguf"
    assert smol_args.llama_cpp_no_repack is False
    args = bench.parse_args(["all", "--llama-cpp-no-repack"])
    assert args.plan[1][1].llama_cpp_no_repack is True


@pytest.mark.parametrize("argv", [[], ["t5", "--workloads", "greedy_b2"], ["smollm2", "--runtimes", "onnx"],
                                  ["bert"]])
def test_parse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_cli_routes_bench_to_the_package():
    proc = subprocess.run([sys.executable, "-m", "fasttx", "bench", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "{t5,smollm2,all}" in proc.stdout
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
    results = {rt: {"w": {"seconds": [], "tokens": [], "ttft_s": []}} for rt in workers}
    warnings: list = []
    harness.run_schedule(Parent(), workers, ["w"], [[10], [20]], 2, 3, results, warnings)
    rss = {rt: w.close()["maxrss_kb"] for rt, w in workers.items()}
    assert warnings == []
    for rt in ("a", "b"):
        cell = results[rt]["w"]
        assert cell["sequences"] == [[11, 11, 11], [21, 21, 21]]
        assert cell["tokens"] == [6, 6]  # 2 rows x 3 new tokens, per repeat
        assert len(cell["seconds"]) == len(cell["ttft_s"]) == 2
        assert rss[rt] > 1000  # KiB: a Python interpreter at least
    assert json.loads(json.dumps(results))  # everything is JSON-serialisable
