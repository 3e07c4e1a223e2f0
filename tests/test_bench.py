"""``fasttx bench``: the harness's pure parts, argument parsing and the worker protocol, without
torch, transformers, ctranslate2 or llama_cpp (the benchmarks themselves are run by hand, see
BENCHMARKS.md); a whole run with fake runtimes in real worker processes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from fasttx import bench
from fasttx.bench import (
    bandwidth,
    benchmark,
    charts,
    decoders,
    machine,
    marian,
    report,
    runner,
    schedule,
    prompts,
    qwen_coder,
    random_model,
    runtimes,
    smollm2,
    stats,
    t5,
    workers,
)

# ---------------------------------------------------------------------------------------- summaries


def test_summarize_median_min_max():
    cell = {"seconds": [2.0, 1.0, 4.0], "tokens": [64, 64, 64], "ttft_s": [0.1, 0.3, 0.2]}
    s = stats.summarize(cell)
    # tokens/s per repeat: 32, 64, 16
    assert s == pytest.approx({
        "tokens_per_s_median": 32.0, "tokens_per_s_min": 16.0, "tokens_per_s_max": 64.0,
        "ttft_ms_median": 200.0, "ttft_ms_min": 100.0, "ttft_ms_max": 300.0,
    })
    assert "decode_tokens_per_s_median" not in s


def test_summarize_even_count_and_batch_tokens():
    # Batch 8 x 64 tokens: 512 tokens per call; the median of an even count is the mean of the two middle ones.
    cell = {"seconds": [1.0, 2.0, 4.0, 8.0], "tokens": [512] * 4, "ttft_s": [0.5, 0.25, 1.0, 2.0]}
    s = stats.summarize(cell)
    assert s["tokens_per_s_median"] == pytest.approx((256 + 128) / 2)
    assert (s["tokens_per_s_min"], s["tokens_per_s_max"]) == (64.0, 512.0)
    assert s["ttft_ms_median"] == pytest.approx(750.0)


def test_summarize_decode_rate():
    # (128 - 1) / (t_128 - t_1) per repeat: 127/1.9, 127/1.27 = 100, 127/2.54 = 50 -> median 127/1.9
    cell = {"seconds": [2.0, 1.5, 3.0], "tokens": [128] * 3, "ttft_s": [0.1, 0.23, 0.46]}
    s = stats.summarize(cell, decode_rate=True)
    assert s["decode_tokens_per_s_median"] == pytest.approx(127 / 1.9)
    assert s["tokens_per_s_median"] == pytest.approx(64.0)


def test_summarize_decode_rate_of_a_batch():
    # Batch 8 x 64 tokens: (512 - 8) / (t_64 - t_1), the 1-token call having made 8 tokens.
    cell = {"seconds": [1.0, 2.0, 3.0], "tokens": [512] * 3, "ttft_s": [0.1, 0.2, 0.3], "first_tokens": [8] * 3}
    s = stats.summarize(cell, decode_rate=True)
    assert s["decode_tokens_per_s_median"] == pytest.approx(504 / 1.8)


def test_summarize_without_timings_is_none():
    assert stats.summarize({"seconds": [], "tokens": [], "ttft_s": []}) is None
    assert stats.summarize({"error": "boom"}) is None


def test_best_thread_count():
    s = lambda tps: {"tokens_per_s_median": tps}  # noqa: E731
    assert stats.best_threads({"1": s(80.5), "2": s(57.4)}) == "1"
    assert stats.best_threads({"1": s(80.0), "2": s(123.9), "3": None}) == "2"
    assert stats.best_threads({"1": s(5.0), "2": s(5.0)}) == "1"  # a tie: the fewer threads
    assert stats.best_threads({"1": None}) is None


# ----------------------------------------------------------------------------------------- tables

LOAD_S, RSS_MB = 0.5, 100.0


def _cell(tps, lo, hi, ttft_ms, decode=None):
    s = {"tokens_per_s_median": tps, "tokens_per_s_min": lo, "tokens_per_s_max": hi,
         "ttft_ms_median": ttft_ms, "ttft_ms_min": ttft_ms, "ttft_ms_max": ttft_ms}
    if decode is not None:
        s["decode_tokens_per_s_median"] = decode
    return {"summary": s}


def _report(runs, workloads, *, bandwidth=None, weight_bytes=None, llc=None):
    """A report as ``runner.run`` assembles it, from ``{threads: {runtime: {workload: cell}}}``:
    load 0.5 s and peak RSS 100 MB everywhere, ``bandwidth`` {threads: GB/s}, ``weight_bytes``
    {runtime: (bytes, from)}, ``llc`` the last-level cache size in bytes."""
    report = {"workloads": workloads, "thread_counts": sorted(runs),
              "machine": {"cpu": "Test CPU", "last_level_cache": llc and {"name": "L3", "size_bytes": llc}},
              "runs": {}, "runtimes": {}}
    for t, rts in runs.items():
        report["runs"][str(t)] = {
            "memory_read_gb_per_s": (bandwidth or {}).get(t), "memory_bandwidth_mb": 1536,
            "runtimes": {rt: {"import_s": 0.1, "load_s": LOAD_S, "peak_rss_mb": RSS_MB, "workloads": cells}
                         for rt, cells in rts.items()},
        }
        for rt in rts:
            nbytes, source = (weight_bytes or {}).get(rt, (None, None))
            report["runtimes"].setdefault(rt, {"decode_weight_bytes": nbytes, "decode_weight_bytes_from": source,
                                               "workloads": {}})
    for rt, info in report["runtimes"].items():
        for wl in workloads:
            by = {str(t): (rts.get(rt, {}).get(wl) or {}).get("summary") for t, rts in runs.items()}
            info["workloads"][wl] = {"best_threads": stats.best_threads(by), "by_threads": by}
    return report


def _t5_sweep():
    return _report({
        1: {"fasttx": {"greedy_b1": _cell(30.0, 29.0, 31.0, 50.0)},
            "pytorch": {"greedy_b1": _cell(10.0, 9.0, 11.0, 120.0)},
            "ctranslate2": {"greedy_b1": _cell(50.0, 45.0, 55.0, 42.0), "beam4_b1": _cell(20.0, 19.0, 21.0, 40.0)}},
        2: {"fasttx": {"greedy_b1": _cell(40.0, 38.5, 41.25, 50.94), "beam4_b1": _cell(30.0, 29.0, 31.0, 55.0)},
            "pytorch": {"greedy_b1": _cell(20.0, 19.0, 21.0, 100.0)},
            "ctranslate2": {"greedy_b1": _cell(25.0, 24.0, 26.0, 40.0)}},
    }, ["greedy_b1", "beam4_b1"])


def test_t5_table_each_runtime_at_its_best_thread_count():
    # CTranslate2 is fastest at 1 thread, the others at 2: "best" ratios compare with CTranslate2
    # at 1 thread, "same thr" ones with it at the row's count.
    assert t5.BENCHMARK.table(_t5_sweep()).splitlines() == [
        ("| runtime | workload | best threads | new tokens/s median [min–max] | vs PyTorch best / same thr "
         "| vs CT2 f32 best / same thr | TTFT ms | load s | peak RSS MB |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| fasttx f32 | greedy_b1 | 2 | 40.0 [38.5–41.2] | 2.00× / 2.00× | 0.80× / 1.60× | 50.9 | 0.50 | 100 |",
        "| PyTorch fp32 | greedy_b1 | 2 | 20.0 [19.0–21.0] | 1.00× / 1.00× | 0.40× / 0.80× | 100.0 | 0.50 | 100 |",
        "| CTranslate2 f32 | greedy_b1 | 1 | 50.0 [45.0–55.0] | 2.50× / 5.00× | 1.00× / 1.00× | 42.0 | 0.50 | 100 |",
        # no PyTorch result for beam4_b1, and no CTranslate2 one at 2 threads
        "| fasttx f32 | beam4_b1 | 2 | 30.0 [29.0–31.0] | – | 1.50× / – | 55.0 | 0.50 | 100 |",
        "| CTranslate2 f32 | beam4_b1 | 1 | 20.0 [19.0–21.0] | – | 1.00× / 1.00× | 40.0 | 0.50 | 100 |",
    ]


def test_comparisons_in_the_json():
    got = report.comparisons(_t5_sweep(), ["pytorch", "ctranslate2"])
    assert got["fasttx/greedy_b1"] == {
        "pytorch": {"best": 2.0, "same_threads": 2.0, "threads": 2, "reference_threads": 2},
        "ctranslate2": {"best": 0.8, "same_threads": 1.6, "threads": 2, "reference_threads": 1},
    }
    assert got["fasttx/beam4_b1"] == {
        "ctranslate2": {"best": 1.5, "same_threads": None, "threads": 2, "reference_threads": 1}}


def test_threads_table():
    assert report.threads_table(_t5_sweep(), t5.RUNTIME_LABELS, "greedy_b1").splitlines() == [
        "| runtime | 1 thread | 2 threads |",
        "| --- | --- | --- |",
        "| fasttx f32 | 30.0 | **40.0** |",
        "| PyTorch fp32 | 10.0 | **20.0** |",
        "| CTranslate2 f32 | **50.0** | 25.0 |",
    ]


def test_thread_scaling_of_every_workload():
    got = report.thread_scaling(_t5_sweep())
    assert got["greedy_b1"]["ctranslate2"] == {"tokens_per_s": {"1": 50.0, "2": 25.0}, "ttft_ms": {"1": 42.0, "2": 40.0}}
    assert got["beam4_b1"]["fasttx"] == {"tokens_per_s": {"2": 30.0}, "ttft_ms": {"2": 55.0}}  # only 2 threads ran
    assert set(got["beam4_b1"]) == {"fasttx", "ctranslate2"}  # PyTorch has no beam4_b1 figure


def test_smollm2_table_with_agreement_column():
    r = _report({2: {
        "fasttx-q4_1": {"greedy_b1": _cell(60.0, 55.0, 62.0, 30.0, decode=64.0)},
        "pytorch": {"greedy_b1": _cell(20.0, 19.0, 21.0, 80.0, decode=21.5)},
        "llama.cpp": {"greedy_b1": _cell(80.0, 79.0, 81.0, 25.0, decode=None)},
    }}, ["greedy_b1"])
    r["runs"]["2"]["agreement_with_pytorch"] = {
        "fasttx-q4_1/greedy_b1": {"identical_sequences": 0, "of": 1, "matching_leading_tokens": [37], "of_tokens": [128]},
        "llama.cpp/greedy_b1": {"identical_sequences": 1, "of": 1, "matching_leading_tokens": [128], "of_tokens": [128]},
    }
    assert smollm2.BENCHMARK.table(r).splitlines() == [
        ("| runtime | workload | best threads | new tokens/s median [min–max] | vs PyTorch best / same thr "
         "| vs llama.cpp best / same thr | decode tokens/s | TTFT ms | load s | peak RSS MB | tokens = PyTorch fp32 |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| fasttx Q4_1 (native) | greedy_b1 | 2 | 60.0 [55.0–62.0] | 3.00× / 3.00× | 0.75× / 0.75× | 64.0 | 30.0 | 0.50 | 100 | 37/128 |",
        "| PyTorch fp32 | greedy_b1 | 2 | 20.0 [19.0–21.0] | 1.00× / 1.00× | 0.25× / 0.25× | 21.5 | 80.0 | 0.50 | 100 | (reference) |",
        "| llama.cpp Q4_1 | greedy_b1 | 2 | 80.0 [79.0–81.0] | 4.00× / 4.00× | 1.00× / 1.00× | – | 25.0 | 0.50 | 100 | 128/128 |",
    ]


def test_ratio_formatting():
    assert stats.format_ratio(stats.ratio(62.1, 68.5)) == "0.91×"
    assert stats.ratio(5.0, None) is None and stats.ratio(5.0, 0.0) is None
    assert stats.format_ratio(None) == "–"


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
    assert [schedule.rotated(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert schedule.length_problems([[1, 2], [3, 4]], 2, 2) == []
    assert schedule.length_problems([[1, 2, 3]], 2, 2) == [
        "1 sequences instead of 2", "sequence lengths [3] instead of 2"]


# ------------------------------------------------------------------------------ argument parsing


def test_parse_t5_subset():
    args = bench.parse_args(["t5", "--threads", "3", "--repeats", "1", "--workloads", "greedy_b1,beam4_b1",
                             "--runtimes", "fasttx", "--out", "x.json"])
    assert args.benchmark == "t5"
    assert (args.thread_counts, args.threads, args.repeats, args.out) == ([1, 2, 3], 3, 1, "x.json")
    assert args.workloads == ["greedy_b1", "beam4_b1"]
    assert args.runtimes == ["fasttx"]
    assert args.new_tokens == 64
    assert args.model_dir.is_absolute() and args.model_dir.name == "t5-small-random"
    assert bench.parse_args(["t5", "--threads-list", "4,1,2,2"]).thread_counts == [1, 2, 4]


def test_parse_smollm2_defaults():
    args = bench.parse_args(["smollm2"])
    assert args.benchmark == "smollm2"
    assert args.runtimes == ["fasttx-q4_1", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp"]
    assert args.workloads == ["greedy_b1", "prompt512_b1", "batch8"]
    assert (args.new_tokens, args.repeats, args.out, args.gguf) == (128, 3, "BENCHMARKS-smollm2.json", None)
    assert args.thread_counts == list(range(1, machine.default_threads() + 1))  # 1 up to the physical cores


def test_parse_qwen_coder_defaults():
    args = bench.parse_args(["qwen2.5-coder"])
    assert args.runtimes == ["fasttx-auto", "fasttx-int8", "fasttx-f32", "pytorch", "llama.cpp"]
    assert args.workloads == ["greedy_b1", "prompt512_b1", "batch8"]
    assert (args.new_tokens, args.out, args.gguf) == (128, "BENCHMARKS-qwen2.5-coder.json", None)


def test_qwen_coder_skipped_with_advice_when_the_file_is_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTTX_HOME", str(tmp_path))
    args = bench.parse_args(["qwen2.5-coder", "--threads", "1"])
    with pytest.raises(SystemExit) as exc:
        qwen_coder.BENCHMARK.prepare(args, list(args.runtimes), {})
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "python scripts/fetch_models.py" in out and str(tmp_path) in out
    # A --gguf that does not exist is an error, not a skip.
    args = bench.parse_args(["qwen2.5-coder", "--gguf", str(tmp_path / "no.gguf")])
    with pytest.raises(SystemExit, match="no such GGUF file"):
        qwen_coder.BENCHMARK.prepare(args, list(args.runtimes), {})


def test_qwen_coder_report_describes_its_workloads(tmp_path):
    """The report's setup names each workload run, with the long prompt and the batch (it once
    looked them up in SmolLM2's table and raised KeyError after the run)."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    args = bench.parse_args(["qwen2.5-coder", "--gguf", str(gguf), "--threads", "1"])
    pool = {"text": "a", "ids": [1, 2], "long_ids": [3] * 512, "batch_ids": [[1, 2]] + [[4, 5, 6]] * 7}
    fields = qwen_coder.BENCHMARK.report_fields(args, pool)
    setup = fields["setup"]
    assert set(setup["workloads"]) == {"greedy_b1", "prompt512_b1", "batch8"}
    assert setup["long_prompt"]["prompt_len"] == 512
    assert setup["batch"]["prompt_lens"] == [2] + [3] * 7
    assert setup["batch"]["messages"][0] == qwen_coder.MESSAGES  # row 0 is greedy_b1's conversation
    assert "n_seq_max=8" in setup["llama_cpp"]["batch"]
    assert fields["model"]["gguf"] == "model.gguf"


class _CharTokenizer:  # one id per character
    def encode(self, text, add_special_tokens=False):
        return Namespace(ids=[ord(c) for c in text])


class _CharModel:
    tokenizer = _CharTokenizer()

    def chat_prompt(self, messages):
        return "".join(f"<s>{m['role']}\n{m['content']}</s>\n" for m in messages) + "<s>assistant\n"


def test_long_prompt_is_512_tokens_with_the_template_intact():
    ids = prompts.long_prompt_ids(_CharModel())
    text = "".join(map(chr, ids))
    assert len(ids) == prompts.LONG_PROMPT_TOKENS == 512
    assert text.startswith("<s>user\n" + prompts.LONG_PROMPT_REQUEST + "Note 1. ")
    assert text.endswith("</s>\n<s>assistant\n")
    assert len(prompts.long_prompt_ids(_CharModel(), 300)) == 300
    with pytest.raises(SystemExit, match="cannot build a 20-token prompt"):
        prompts.long_prompt_ids(_CharModel(), 20)


def test_batch_prompts_are_eight_different_chats_the_first_the_benchmarks_own():
    rows = prompts.batch_prompt_ids(_CharModel(), smollm2.MESSAGES)
    assert len(rows) == prompts.BATCH == smollm2.WORKLOADS["batch8"]["batch"] == 8
    assert rows[0] == _CharModel.tokenizer.encode(_CharModel().chat_prompt(smollm2.MESSAGES)).ids
    assert len({tuple(r) for r in rows}) == 8
    lengths = [len(r) for r in rows]
    assert max(lengths) - min(lengths) < 20  # similar lengths: little padding


def test_each_chat_benchmark_gives_each_workload_its_prompts():
    pool = {"ids": [1], "long_ids": [2] * 512, "batch_ids": [[3]] * 8}
    for b in (smollm2.BENCHMARK, qwen_coder.BENCHMARK):
        assert b.workload_inputs("greedy_b1", pool) == [[1]]
        assert b.workload_inputs("prompt512_b1", pool) == [[2] * 512]
        assert b.workload_inputs("batch8", pool) == [[3]] * 8
        assert [b.expected_rows(w) for w in b.workloads] == [1, 1, 8]
        assert b.batch1_workloads() == ["greedy_b1", "prompt512_b1"]  # batch8 gets no % of bandwidth


def test_left_padding_of_ragged_rows():
    assert runtimes.left_padded([[5, 6, 7], [8]]) == ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    assert runtimes.left_padded([[1, 2]]) == ([[1, 2]], [[1, 1]])


def test_batch8_row0_is_checked_against_greedy_b1_and_llama_cpp():
    b1 = [[1, 2, 3, 4]]
    results = {
        "fasttx-q4_1": {"greedy_b1": {"sequences": b1}, "batch8": {"sequences": [[1, 2, 3, 4]] + [[9]] * 7}},
        "llama.cpp": {"greedy_b1": {"sequences": b1}, "batch8": {"sequences": [[1, 2, 0, 0]] + [[9]] * 7}},
    }
    checks = smollm2.BENCHMARK.extra_checks(results, ["greedy_b1", "batch8"])
    assert checks["batch8_row0_vs_greedy_b1_leading_tokens"] == {"fasttx-q4_1": [4, 4], "llama.cpp": [2, 4]}
    assert checks["fasttx_q4_1_vs_llama_cpp_leading_tokens"]["batch8"] == [[2, 4]] + [[1, 1]] * 7


def test_parse_marian_defaults():
    args = bench.parse_args(["marian", "--threads", "2"])
    assert args.benchmark == "marian"
    assert args.runtimes == ["fasttx", "fasttx-int8", "pytorch", "ctranslate2", "ctranslate2-int8"]
    assert args.workloads == ["beam4_b1", "greedy_b32"]
    assert (args.new_tokens, args.out, args.thread_counts) == (64, "BENCHMARKS-marian.json", [1, 2])
    assert args.model_dir.is_absolute() and args.model_dir.name == "opus-mt-en-de-random"
    assert [marian.BENCHMARK.options(wl, 64)["num_beams"] for wl in args.workloads] == [4, 1]
    assert all(marian.BENCHMARK.options(wl, 64)["min_new_tokens"] == 64 for wl in args.workloads)


@pytest.mark.parametrize("name, model_dir", [("qwen3", "qwen3-0.6b-random"), ("gemma3", "gemma-3-270m-random")])
def test_parse_decoder_shape_defaults(name, model_dir):
    args = bench.parse_args([name, "--threads-list", "1,2", "--repeats", "2"])
    assert args.benchmark == name
    assert (args.runtimes, args.workloads) == (["fasttx", "pytorch"], ["greedy_b1", "prompt512_b1"])
    assert (args.new_tokens, args.repeats, args.out) == (128, 2, f"BENCHMARKS-{name}.json")
    assert args.model_dir.name == model_dir


def test_marian_inputs_and_converter_vocabulary():
    pool = marian.make_inputs()
    assert len(pool) == 32 and {len(row) for row in pool} == {marian.SOURCE_LEN}
    assert all(row[-1] == marian.EOS and marian.EOS not in row[:-1] for row in pool)  # as MarianTokenizer ends a source
    assert all(marian.UNK not in row and marian.PAD not in row for row in pool)
    assert marian.BENCHMARK.workload_inputs("beam4_b1", pool) == pool[:1]
    assert marian.BENCHMARK.workload_inputs("greedy_b32", pool) == pool
    tok = marian.vocab_tokenizer(marian.VOCAB_SIZE)
    vocab = tok.get_vocab()
    assert len(vocab) == marian.VOCAB_SIZE
    assert (vocab["</s>"], vocab["<unk>"], vocab["<pad>"], vocab["tok2"]) == (0, 1, marian.VOCAB_SIZE - 1, 2)
    assert (tok.eos_token, tok.unk_token, tok.pad_token) == ("</s>", "<unk>", "<pad>")
    assert tok.convert_ids_to_tokens([0, 5]) == ["</s>", "tok5"]
    # T5's stand-in keeps the ids it always had.
    assert t5.vocab_tokenizer(32128).convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "</s>", "<unk>", "tok3"]
    # The generation defaults every runtime applies are opus-mt-en-de's.
    assert marian.GENERATION_CONFIG["bad_words_ids"] == [[marian.PAD]] and marian.GENERATION_CONFIG["renormalize_logits"]


def test_decoder_prompts():
    pool = decoders.QWEN3.inputs(None)
    assert [len(pool[wl]) for wl in ("greedy_b1", "prompt512_b1")] == [32, 512]
    assert all(decoders.PROMPT_ID_RANGE[0] <= i < decoders.PROMPT_ID_RANGE[1] for ids in pool.values() for i in ids)
    assert decoders.QWEN3.workload_inputs("prompt512_b1", pool) == [pool["prompt512_b1"]]
    assert decoders.GEMMA3.inputs(None) == pool  # the same prompts for both shapes
    layers = decoders.GEMMA3_CONFIG["layer_types"]
    assert [i for i, t in enumerate(layers) if t == "full_attention"] == [5, 11, 17]  # gemma-3-270m's pattern 6


@pytest.mark.parametrize("bench_module, name", [(marian, "marian"), (decoders, "qwen3"), (decoders, "gemma3")])
def test_random_model_skipped_with_advice_without_torch(bench_module, name, tmp_path, monkeypatch):
    """Without torch and transformers the random model cannot be built: the run stops with the
    packages to install (or --model-dir with a model built earlier), before any worker starts."""
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    b = bench.BENCHMARKS[name]
    args = bench.parse_args([name, "--threads", "1", "--model-dir", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="pip install torch transformers.*--model-dir"):
        b.prepare(args, list(args.runtimes), {})
    assert not (tmp_path / "m").exists()


def test_marian_ctranslate2_skipped_when_not_importable(tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"")
    (model_dir / random_model.STAMP).write_text(json.dumps(marian.RECIPE))  # a model built earlier
    assert random_model.recipe_matches(model_dir, marian.RECIPE)
    assert not random_model.recipe_matches(model_dir, {**marian.RECIPE, "seed": 1})  # another recipe: rebuilt
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    args = bench.parse_args(["marian", "--threads", "1", "--model-dir", str(model_dir)])
    skipped: dict = {}
    assert marian.BENCHMARK.prepare(args, list(args.runtimes), skipped) == ["fasttx", "fasttx-int8", "pytorch"]
    assert set(skipped) == {"ctranslate2", "ctranslate2-int8"}
    assert skipped["ctranslate2"].startswith("import ctranslate2 failed")
    assert "SKIP ctranslate2-int8: import ctranslate2 failed" in capsys.readouterr().out


def test_sharded_random_model_counts_as_built(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    (tmp_path / random_model.STAMP).write_text(json.dumps({"v": 1}))
    assert random_model.recipe_matches(tmp_path, {"v": 1})


def test_parse_worker_takes_its_one_thread_count():
    args = bench.parse_args(["t5", "--worker", "fasttx", "--threads", "2", "--model-dir", "/m/t5"])
    assert (args.worker, args.threads) == ("fasttx", 2)
    assert not hasattr(args, "thread_counts")


def test_parse_all_runs_every_benchmark(tmp_path):
    args = bench.parse_args(["all", "--threads", "2", "--repeats", "3", "--out-dir", str(tmp_path),
                             "--gguf", "/m/smol.gguf"])
    assert [name for name, _ in args.plan] == ["t5", "smollm2", "qwen2.5-coder", "marian", "qwen3", "gemma3"]
    (_, t5_args), (_, smol_args), (_, qwen_args), *_ = args.plan
    assert (t5_args.thread_counts, t5_args.repeats, t5_args.out) == ([1, 2], 3, str(tmp_path / "t5.json"))
    assert t5_args.workloads == ["greedy_b1", "beam4_b1", "greedy_b8"]
    assert (smol_args.thread_counts, smol_args.repeats, smol_args.out) == ([1, 2], 3, str(tmp_path / "smollm2.json"))
    assert smol_args.gguf == "/m/smol.gguf"
    assert smol_args.llama_cpp_no_repack is False
    assert qwen_args.out == str(tmp_path / "qwen2.5-coder.json")
    assert qwen_args.gguf is None  # --gguf names SmolLM2's file; Qwen's is found in $FASTTX_HOME
    for a in (t5_args, smol_args):
        assert (a.bandwidth_mb, a.no_chart) == (1536, False)
    args = bench.parse_args(["all", "--llama-cpp-no-repack", "--threads-list", "1,4", "--bandwidth-mb", "0", "--no-chart"])
    assert args.plan[1][1].llama_cpp_no_repack is True and args.plan[2][1].llama_cpp_no_repack is True
    assert all(a.thread_counts == [1, 4] and a.bandwidth_mb == 0 and a.no_chart for _, a in args.plan)


@pytest.mark.parametrize("argv", [[], ["t5", "--workloads", "greedy_b2"], ["smollm2", "--runtimes", "onnx"],
                                  ["bert"], ["scaling"], ["t5", "--bandwidth-mb", "-1"], ["all", "--bandwidth-mb", "-1"],
                                  ["t5", "--threads-list", "0,2"], ["t5", "--threads-list", "two"],
                                  ["smollm2", "--threads", "2", "--threads-list", "1,2"], ["smollm2", "--threads", "0"],
                                  ["t5", "--repeats", "-1"], ["t5", "--new-tokens", "0"],
                                  ["marian", "--workloads", "greedy_b8"], ["qwen3", "--runtimes", "llama.cpp"],
                                  ["gemma3", "--workloads", "beam4_b1"]])
def test_parse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_cli_routes_bench_to_the_package():
    proc = subprocess.run([sys.executable, "-m", "fasttx", "bench", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "{t5,smollm2,qwen2.5-coder,marian,qwen3,gemma3,gemm,prompt-lookup,serve,constrained,all}" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fasttx", "bench", "t5", "--workloads", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown workload 'nope'" in proc.stderr


# ------------------------------------------------------------------------- skipping, workers


def test_missing_runtime_is_skipped(capsys):
    class Fake(benchmark.Benchmark):
        requires = {"here": ("json",), "absent": ("no_such_module_for_fasttx_bench",), "free": ()}

    skipped: dict = {}
    keep = workers.available_runtimes(Fake(), ["here", "absent", "free"], skipped)
    assert keep == ["here", "free"]
    assert skipped == {"absent": "not installed: import no_such_module_for_fasttx_bench failed"}
    assert "SKIP absent: not installed" in capsys.readouterr().out


def test_llama_cpp_skipped_when_not_importable(monkeypatch):
    real = workers.missing_modules
    monkeypatch.setattr(workers, "missing_modules", lambda mods: ["llama_cpp"] if "llama_cpp" in mods else real(mods))
    skipped: dict = {}
    keep = workers.available_runtimes(smollm2.BENCHMARK, ["fasttx-q4_1", "llama.cpp"], skipped)
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
    args = Namespace(model_dir=Path("/m/t5"), gguf=Path("/m/s.gguf"), llama_cpp_no_repack=False)
    cmd = workers.worker_command(t5.BENCHMARK, "fasttx", args, 2)
    assert cmd == [sys.executable, "-m", "fasttx.bench", "t5", "--worker", "fasttx", "--threads", "2",
                   "--model-dir", "/m/t5"]
    cmd = workers.worker_command(marian.BENCHMARK, "pytorch", args, 2)
    assert cmd[3:] == [str(workers.PACKAGE_ROOT / "fasttx"), "marian", "--worker", "pytorch", "--threads", "2",
                       "--model-dir", "/m/t5"]
    cmd = workers.worker_command(decoders.GEMMA3, "fasttx", args, 1)
    assert cmd == [sys.executable, "-m", "fasttx.bench", "gemma3", "--worker", "fasttx", "--threads", "1",
                   "--model-dir", "/m/t5"]
    cmd = workers.worker_command(smollm2.BENCHMARK, "llama.cpp", args, 1)
    assert cmd[:2] == [sys.executable, "-c"] and cmd[2] == workers._STUB_BOOTSTRAP
    assert cmd[3:] == [str(workers.PACKAGE_ROOT / "fasttx"), "smollm2", "--worker", "llama.cpp", "--threads", "1",
                       "--gguf", "/m/s.gguf"]
    args.llama_cpp_no_repack = True
    assert workers.worker_command(smollm2.BENCHMARK, "llama.cpp", args, 1)[-1] == "--llama-cpp-no-repack"


def test_stub_bootstrap_does_not_load_fasttx_native():
    check = "import fasttx.bench.smollm2\nprint(sorted(m for m in ('fasttx._native', 'numpy', 'tokenizers') if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", workers._STUB_PREAMBLE + check, str(workers.PACKAGE_ROOT / "fasttx")],
                          capture_output=True, text=True, timeout=60, check=False, env=workers.worker_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_failing_workers_are_skipped(tmp_path, capsys):
    fails = "import json; print(json.dumps({'error': 'Traceback ...\\nModuleNotFoundError: No module named llama_cpp'}))"
    dies = "import sys; sys.exit(3)"
    cmds = {"fails": [sys.executable, "-c", fails], "dies": [sys.executable, "-c", dies]}
    skipped: dict = {}
    started = workers.start_workers(["fails", "dies"], cmds.__getitem__, tmp_path, skipped)
    assert started == {}
    assert skipped["fails"].splitlines()[-1] == "ModuleNotFoundError: No module named llama_cpp"
    assert skipped["dies"].startswith("dies worker died (exit status 3;")
    out = capsys.readouterr().out
    assert "SKIP fails: ModuleNotFoundError: No module named llama_cpp" in out


FAKE_WORKER = '''
import sys
from fasttx.bench import benchmark, protocol

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

class Fake(benchmark.Benchmark):
    def runtime_class(self, runtime):
        return Echo

    def make_runtime(self, runtime, args):
        return Echo(runtime)

protocol.serve(Fake(), sys.argv[1], None)
'''


class FakeBenchmark(benchmark.Benchmark):
    """Two workloads (batch 1 and 2) of the Echo runtimes of FAKE_WORKER."""

    name = "fake"
    labels = {"fx": "FX", "other": "Other"}
    workloads = {"b1": {"batch": 1}, "b2": {"batch": 2}}
    fasttx_dtypes = {"fx": "auto", "fx-int8": "int8"}
    weight_counterparts = {"other": "fx", "other-int8": "fx-int8"}
    must_match = "fx/b1"
    reference = "other"
    ratio_columns = (("other", "vs Other"),)

    def inputs(self, args):
        return [[10], [20]]

    def workload_inputs(self, workload, pool):
        return pool[:self.workloads[workload]["batch"]]

    def options(self, workload, new_tokens):
        return {"max_new_tokens": new_tokens}


def test_worker_protocol_and_schedule(tmp_path, monkeypatch):
    """Two fake runtimes through real worker processes: warm-up + 2 repeats, tokens counted."""
    monkeypatch.setattr(schedule, "SETTLE_S", 0.0)
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    skipped: dict = {}
    started = workers.start_workers(["a", "b"], lambda rt: [sys.executable, str(script), rt], tmp_path, skipped)
    assert skipped == {} and list(started) == ["a", "b"]
    assert started["a"].ready["versions"] == {"echo": "1"}
    results = {rt: {"b2": schedule.empty_cell()} for rt in started}
    warnings: list = []
    probes: list = []
    schedule.run_schedule(FakeBenchmark(), started, ["b2"], [[10], [20]], 2, 3, results, warnings,
                          after_repeat=lambda: probes.append(len(results["a"]["b2"]["seconds"])))
    assert probes == [1, 2]  # after each repeat, once its timings are in
    rss = {rt: w.close()["maxrss_kb"] for rt, w in started.items()}
    assert warnings == []
    for rt in ("a", "b"):
        cell = results[rt]["b2"]
        assert cell["sequences"] == [[11, 11, 11], [21, 21, 21]]
        assert cell["tokens"] == [6, 6]  # 2 rows x 3 new tokens, per repeat
        assert len(cell["seconds"]) == len(cell["ttft_s"]) == 2
        assert cell["first_tokens"] == [2, 2]  # the 1-token call: one per row
        assert rss[rt] > 1000  # KiB: a Python interpreter at least
    assert json.loads(json.dumps(results))  # everything is JSON-serialisable


# ------------------------------------------------------------------------------------- machine


def test_cache_sizes_from_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                             (3, "Unified", "107520K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    caches = machine.read_caches(tmp_path)
    assert [(c["level"], c["type"], c["size_bytes"]) for c in caches] == [
        (1, "Data", 48 << 10), (1, "Instruction", 32 << 10), (2, "Unified", 2 << 20), (3, "Unified", 105 << 20)]
    llc = machine.last_level_cache(caches)
    assert (machine.cache_name(llc), llc["size_bytes"]) == ("L3", 105 << 20)
    assert [machine.cache_name(c) for c in caches] == ["L1d", "L1i", "L2", "L3"]
    assert machine.read_caches(tmp_path / "absent") == [] and machine.last_level_cache([]) is None
    assert machine.parse_cache_size("32M") == 32 << 20 and machine.parse_cache_size("bogus") is None
    info = {"cpu": "Test CPU", "physical_cores": 2, "logical_cpus": 4,
            "caches": [{**c, "name": machine.cache_name(c)} for c in caches], "last_level_cache": {"name": "L3"}}
    assert machine.describe(info) == ("Test CPU, 2 physical cores / 4 logical CPUs; caches L1d 48 KiB, L1i 32 KiB, "
                                      "L2 2 MiB, L3 105 MiB (last level: L3)")


def test_machine_info_of_this_machine():
    info = machine.machine_info()
    assert info["cpu"] and info["logical_cpus"] >= 1
    assert isinstance(info["caches"], list)
    if info["caches"]:
        assert info["last_level_cache"]["size_bytes"] == max(
            c["size_bytes"] for c in info["caches"] if c["level"] == max(c["level"] for c in info["caches"]))


# ------------------------------------------------------------------- memory bandwidth ceiling


def _bandwidth_report(bandwidth, llc=None):
    """A T5 report at 2 threads: fasttx f32 / int8 measured bytes, PyTorch and CT2 int8 through counterparts."""
    return _report({2: {
        "fasttx": {"greedy_b1": _cell(40.0, 38.0, 41.0, 50.0), "beam4_b1": _cell(30.0, 29.0, 31.0, 55.0),
                   "greedy_b8": _cell(300.0, 290.0, 310.0, 90.0)},
        "fasttx-int8": {"greedy_b1": _cell(100.0, 99.0, 101.0, 20.0)},
        "pytorch": {"greedy_b1": _cell(10.0, 9.0, 11.0, 120.0)},
        "ctranslate2-int8": {"greedy_b1": _cell(50.0, 49.0, 51.0, 12.0)},
    }}, ["greedy_b1", "beam4_b1", "greedy_b8"], bandwidth={2: bandwidth}, llc=llc, weight_bytes={
        "fasttx": (150_000_000, "fasttx"), "fasttx-int8": (40_000_000, "fasttx-int8"),
        "pytorch": (150_000_000, "fasttx"), "ctranslate2-int8": (None, "fasttx-int8")})


def test_percent_of_bandwidth_t5():
    r = _bandwidth_report(20.0)
    b1 = t5.BENCHMARK.batch1_workloads()
    assert b1 == ["greedy_b1", "beam4_b1"]
    pct = lambda rt, wl: bandwidth.percent_of_bandwidth(r, rt, wl, "2", b1)  # noqa: E731
    # 40 tokens/s x 150 MB = 6 GB/s of 20 GB/s = 30%
    assert pct("fasttx", "greedy_b1") == pytest.approx(30.0)
    assert pct("fasttx", "beam4_b1") == pytest.approx(22.5)  # beam search: weights read once per step
    assert pct("fasttx-int8", "greedy_b1") == pytest.approx(20.0)
    assert pct("pytorch", "greedy_b1") == pytest.approx(7.5)
    assert pct("fasttx", "greedy_b8") is None  # batch 8: not a bandwidth ceiling
    assert pct("ctranslate2-int8", "greedy_b1") is None  # bytes unknown
    assert bandwidth.percent_of_bandwidth(r, "fasttx", "greedy_b1", "1", b1) is None  # no run at 1 thread
    assert bandwidth.percent_of_bandwidth(_bandwidth_report(None), "fasttx", "greedy_b1", "2", b1) is None
    figures = bandwidth.bandwidth_figures(r, report.table_rows(r), b1)
    assert {k: v["percent"] for k, v in figures.items()} == pytest.approx({
        "fasttx/greedy_b1": 30.0, "fasttx/beam4_b1": 22.5, "fasttx-int8/greedy_b1": 20.0, "pytorch/greedy_b1": 7.5})
    assert figures["fasttx/greedy_b1"]["threads"] == 2 and figures["fasttx/greedy_b1"]["weights_fit_in_llc"] is None


def test_weights_in_the_last_level_cache_get_no_percentage():
    r = _bandwidth_report(20.0, llc=64 << 20)  # 64 MiB: int8's 40 MB fit, f32's 150 MB do not
    b1 = t5.BENCHMARK.batch1_workloads()
    assert bandwidth.weights_fit_in_llc(r, "fasttx-int8") is True
    assert bandwidth.weights_fit_in_llc(r, "fasttx") is False
    assert bandwidth.weights_fit_in_llc(r, "ctranslate2-int8") is None
    assert bandwidth.bandwidth_cell(r, "fasttx", "greedy_b1", "2", b1) == "30%"
    assert bandwidth.bandwidth_cell(r, "fasttx-int8", "greedy_b1", "2", b1) == "n/a: 40 MB fit in L3 (64 MiB)"
    lines = t5.BENCHMARK.table(r).splitlines()
    assert lines[3].startswith("| fasttx int8 | greedy_b1 | 2 | ") and "| n/a: 40 MB fit in L3 (64 MiB) |" in lines[3]
    figures = bandwidth.bandwidth_figures(r, report.table_rows(r), b1)
    assert figures["fasttx-int8/greedy_b1"] == {"percent": pytest.approx(20.0), "threads": 2, "weights_fit_in_llc": True}


def test_percent_of_bandwidth_uses_the_decode_rate_when_there_is_one():
    r = _report({1: {
        "fasttx-q4_1": {"greedy_b1": _cell(60.0, 55.0, 62.0, 30.0, decode=64.0)},
        "llama.cpp": {"greedy_b1": _cell(80.0, 79.0, 81.0, 25.0, decode=None)},
    }}, ["greedy_b1"], bandwidth={1: 25.0},
        weight_bytes={"fasttx-q4_1": (100_000_000, "fasttx-q4_1"), "llama.cpp": (100_000_000, "fasttx-q4_1")})
    b1 = smollm2.BENCHMARK.batch1_workloads()
    # 64 decode tokens/s x 100 MB / 25 GB/s = 25.6%; no decode rate: 80 tokens/s -> 32%
    assert bandwidth.percent_of_bandwidth(r, "fasttx-q4_1", "greedy_b1", "1", b1) == pytest.approx(25.6)
    assert bandwidth.percent_of_bandwidth(r, "llama.cpp", "greedy_b1", "1", b1) == pytest.approx(32.0)
    lines = smollm2.BENCHMARK.table(r).splitlines()
    # no PyTorch in this report: one ratio column (vs llama.cpp)
    assert lines[0].split(" | ")[5:8] == ["decode tokens/s", "% of bandwidth", "TTFT ms"]
    assert lines[2].split(" | ")[5:7] == ["64.0", "26%"]
    assert lines[3].split(" | ")[5:7] == ["–", "32%"]


def test_bandwidth_column_only_when_measured():
    with_bw = t5.BENCHMARK.table(_bandwidth_report(20.0)).splitlines()
    assert with_bw[0] == ("| runtime | workload | best threads | new tokens/s median [min–max] | vs PyTorch best / same thr "
                          "| vs CT2 int8 best / same thr | % of bandwidth | TTFT ms | load s | peak RSS MB |")
    assert with_bw[2] == ("| fasttx f32 | greedy_b1 | 2 | 40.0 [38.0–41.0] | 4.00× / 4.00× | 0.80× / 0.80× | 30% | 50.0 "
                          "| 0.50 | 100 |")
    assert with_bw[5] == ("| CTranslate2 int8 | greedy_b1 | 2 | 50.0 [49.0–51.0] | 5.00× / 5.00× | 1.00× / 1.00× | – "
                          "| 12.0 | 0.50 | 100 |")
    assert with_bw[6].startswith("| fasttx f32 | beam4_b1 | ") and "| 22% |" in with_bw[6]
    assert with_bw[7].startswith("| fasttx f32 | greedy_b8 | ") and "| – | 90.0 |" in with_bw[7]
    table = t5.BENCHMARK.table(_bandwidth_report(None))
    assert "% of bandwidth" not in table
    assert table.splitlines()[2] == ("| fasttx f32 | greedy_b1 | 2 | 40.0 [38.0–41.0] | 4.00× / 4.00× | 0.80× / 0.80× "
                                     "| 50.0 | 0.50 | 100 |")


def test_bandwidth_lines_under_the_table():
    lines = bandwidth.bandwidth_lines(_bandwidth_report(20.0), t5.RUNTIME_LABELS, t5.BENCHMARK.bandwidth_note)
    assert lines[0] == ("Memory read bandwidth (1536 MB buffer, best of several reads; probed before each thread "
                        "count's run and after each repeat): 2 threads 20.0 GB/s")
    assert lines[1] == ("Weights read per batch-1 step: fasttx f32 150.0 MB, fasttx int8 40.0 MB, "
                        "PyTorch fp32 150.0 MB (as fasttx f32), CTranslate2 int8 unknown; last-level cache size unknown")
    assert lines[2].startswith("% of bandwidth = tokens/s x weight bytes per step / DRAM read bandwidth at the row's "
                               "thread count, batch-1 workloads only; \"n/a\" where the weights fit in the last-level")
    assert lines[2].endswith("; T5 uses the decode tokens/s (the encoder and first step taken out); beam4_b1 reads "
                             "the weights once per step for its 4 beams")
    r = _bandwidth_report(20.0, llc=64 << 20)
    r["runs"]["2"]["memory_read_gb_per_s_probes"] = [21.0, 20.0, 19.5, 20.5]
    lines = bandwidth.bandwidth_lines(r, t5.RUNTIME_LABELS)
    assert lines[0].endswith("2 threads 20.0 GB/s (median of 4: 21.0, 20.0, 19.5, 20.5)")
    assert "fasttx int8 40.0 MB (fits in the LLC)," in lines[1] and lines[1].endswith("; last-level cache L3 64 MiB")
    r = _bandwidth_report(None)
    r["runs"]["2"]["memory_bandwidth_skipped"] = "skipped (--bandwidth-mb 0)"
    lines = bandwidth.bandwidth_lines(r, t5.RUNTIME_LABELS)
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
    got = bandwidth.weight_bytes_per_runtime(
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
    got = bandwidth.weight_bytes_per_runtime(
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
    assert bandwidth.decode_weight_bytes(Namespace(_native=Namespace(decode_weight_bytes=123))) == 123
    assert bandwidth.decode_weight_bytes(Namespace(_native=Namespace())) is None


def test_measure_memory_bandwidth(monkeypatch):
    assert machine.measure_memory_bandwidth(2, 0) == (None, "skipped (--bandwidth-mb 0)")
    native = pytest.importorskip("fasttx._native", reason="fasttx's native module is not built")
    calls = []

    def fake(threads, megabytes=1024):
        calls.append((threads, megabytes))
        return 31.5

    monkeypatch.setattr(native, "memory_bandwidth", fake, raising=False)
    assert machine.measure_memory_bandwidth(2, 1536) == (31.5, "")
    assert calls == [(2, 1536)]
    monkeypatch.delattr(native, "memory_bandwidth")
    bw, why = machine.measure_memory_bandwidth(2, 1536)
    assert bw is None and "no memory_bandwidth" in why


# ----------------------------------------------------------------------------- machine paths


def test_scrub_paths():
    reps = [("/x/venv/lib/python3.11/site-packages", "<site-packages>"), ("/x/venv", "<python>"), ("/home/u", "~")]
    got = report.scrub_paths({"/x/venv/lib/python3.11/site-packages/fasttx/_native.so": [1, 2.0],
                              "log": ["/home/u/.cache/m", "/home/ua", 'File "/x/venv/bin/x", line 3', None]}, reps)
    assert got == {"<site-packages>/fasttx/_native.so": [1, 2.0],
                   "log": ["~/.cache/m", "/home/ua", 'File "<python>/bin/x", line 3', None]}
    assert report.scrub_paths("/opt/ref/lib/python3.11/site-packages/torch/_C.so", []) == "<site-packages>/torch/_C.so"
    reps = report.path_replacements()
    assert (sys.prefix, "<python>") in reps or any(p == sys.prefix for p, _ in reps)
    assert [len(p) for p, _ in reps] == sorted((len(p) for p, _ in reps), reverse=True)
    assert report.scrub_paths(sys.executable).startswith("<")


# ---------------------------------------------------------------------------------------- charts


def _chart_report():
    r = {**_t5_sweep(), "benchmark": "t5", "date": "2026-12-01T10:00:00+00:00"}
    return r


def test_charts_are_pngs(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the chart is optional and skipped")
    r = _chart_report()
    path, why = charts.write_chart(r, charts.chart_path(tmp_path / "t5.json"), t5.RUNTIME_LABELS)
    assert (path, why) == (tmp_path / "t5.png", "")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert charts.chart_title(r) == "fasttx bench t5: Test CPU, best of 1–2 threads, 2026-12-01"
    path, why = charts.write_threads_chart(r, charts.chart_path(tmp_path / "t5.json", "-threads"), t5.RUNTIME_LABELS)
    assert (path, why) == (tmp_path / "t5-threads.png", "")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = {**r, "thread_counts": [2]}
    assert charts.write_threads_chart(one, tmp_path / "x.png", {})[0] is None


def test_charts_skipped_without_matplotlib(tmp_path, monkeypatch):
    def no_matplotlib(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(charts, "_figure", no_matplotlib)
    for draw in (charts.write_chart, charts.write_threads_chart):
        path, why = draw(_chart_report(), tmp_path / "x.png", {})
        assert path is None and why.startswith("matplotlib is not installed")
    assert not (tmp_path / "x.png").exists()


def test_chart_path():
    assert charts.chart_path("results/t5.json") == Path("results/t5.png")
    assert charts.chart_path("results/t5.json", "-threads") == Path("results/t5-threads.png")
    assert charts.chart_path("t5") == Path("t5.png")


# ------------------------------------------------------------------------ a whole run, with fakes


def test_whole_run_sweeps_threads_and_writes_no_machine_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(schedule, "SETTLE_S", 0.0)
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    started = []
    monkeypatch.setattr(runner, "worker_command",
                        lambda b, rt, args, threads: started.append((rt, threads)) or [sys.executable, str(script), rt])
    monkeypatch.setattr(runner, "measure_memory_bandwidth", lambda threads, mb: (8.0 * threads, ""))
    llc = {"name": "L3", "size_bytes": 1 << 20}  # 1 MiB: fx-int8's 0.5 MB fit, fx's 2 MB do not
    monkeypatch.setattr(runner, "machine_info", lambda: {"cpu": "Test CPU", "physical_cores": 2, "logical_cpus": 2,
                                                         "caches": [], "last_level_cache": llc})
    loaded = []
    monkeypatch.setattr(bandwidth, "load_weight_bytes", lambda b, a, rt: loaded.append(rt) or 500_000)
    out = tmp_path / "results" / "r.json"
    args = Namespace(thread_counts=[1, 2], threads=2, repeats=1, out=str(out), runtimes=["fx", "other", "other-int8"],
                     workloads=["b1", "b2"], new_tokens=3, bandwidth_mb=64, no_chart=True)
    assert runner.run(FakeBenchmark(), args) == 0
    assert started == [(rt, t) for t in (1, 2) for rt in ("fx", "other", "other-int8")]
    text = out.read_text()
    assert str(tmp_path) not in text and sys.prefix not in text  # no paths of this machine
    r = json.loads(text)
    assert r["thread_counts"] == [1, 2] and sorted(r["runs"]) == ["1", "2"]
    assert r["runs"]["2"]["memory_read_gb_per_s"] == 16.0 and r["runs"]["2"]["memory_read_gb_per_s_probes"] == [16.0, 16.0]
    rts = r["runtimes"]
    assert (rts["fx"]["decode_weight_bytes"], rts["fx"]["decode_weight_bytes_from"]) == (2_000_000, "fx")
    assert (rts["other"]["decode_weight_bytes"], rts["other"]["decode_weight_bytes_from"]) == (2_000_000, "fx")
    assert (rts["other-int8"]["decode_weight_bytes"], rts["other-int8"]["decode_weight_bytes_from"]) == (500_000, "fx-int8")
    assert loaded == ["fx-int8"]
    for rt in rts:
        for wl in ("b1", "b2"):
            cell = rts[rt]["workloads"][wl]
            assert sorted(cell["by_threads"]) == ["1", "2"] and cell["best_threads"] in ("1", "2")
    assert r["runs"]["1"]["agreement_with_pytorch"]["fx/b1"] == {"identical_sequences": 1, "of": 1}
    assert set(r["comparisons"]["fx/b1"]) == {"other"}
    assert set(r["comparisons"]["fx/b1"]["other"]) == {"best", "same_threads", "threads", "reference_threads"}
    assert set(r["percent_of_bandwidth"]) == {"fx/b1", "other/b1", "other-int8/b1"}
    assert r["percent_of_bandwidth"]["other-int8/b1"]["weights_fit_in_llc"] is True
    assert r["percent_of_bandwidth"]["fx/b1"]["weights_fit_in_llc"] is False
    assert (r["chart"], r["threads_chart"]) == (None, None)
    printed = capsys.readouterr().out
    assert "Machine: Test CPU, 2 physical cores / 2 logical CPUs" in printed
    assert "| vs Other best / same thr |" in printed and "| % of bandwidth |" in printed
    assert "n/a: 0 MB fit in L3 (1 MiB)" in printed
    assert "b1: median new tokens/s by thread count (best in bold)" in printed
    assert "b2: median new tokens/s by thread count (best in bold)" in printed
    # Every workload's thread scaling in the JSON too, for every runtime.
    assert set(r["thread_scaling"]) == {"b1", "b2"}
    for wl in ("b1", "b2"):
        for rt in rts:
            scaling = r["thread_scaling"][wl][rt]
            assert sorted(scaling["tokens_per_s"]) == sorted(scaling["ttft_ms"]) == ["1", "2"]
            assert scaling["tokens_per_s"]["2"] == rts[rt]["workloads"][wl]["by_threads"]["2"]["tokens_per_s_median"]
    assert ("Weights read per batch-1 step: FX 2.0 MB, Other 2.0 MB (as FX), other-int8 0.5 MB (as fx-int8) "
            "(fits in the LLC); last-level cache L3 1 MiB") in printed

    if importlib.util.find_spec("matplotlib") is not None:
        args.no_chart = False
        assert runner.run(FakeBenchmark(), args) == 0
        r = json.loads(out.read_text())
        assert (r["chart"], r["threads_chart"]) == ("r.png", "r-threads.png")  # next to the JSON
        assert (out.parent / "r.png").read_bytes()[:4] == b"\x89PNG"
