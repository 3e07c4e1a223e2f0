"""Decoder-only shapes in float32 (Qwen3-0.6B, gemma-3-270m): fasttx vs PyTorch transformers on CPU.

Usage::

    fasttx bench qwen3  [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-qwen3.json]
    fasttx bench gemma3 [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-gemma3.json]

What it does
------------
1. Model: the architecture's transformers class built from the real model's ``config.json``
   (written out below: Qwen/Qwen3-0.6B, google/gemma-3-270m) with random weights
   (``torch.manual_seed(0)``), saved once with ``save_pretrained`` (float32 safetensors) in
   ``--model-dir``.  Speed does not depend on the weight values; random ones make the text
   meaningless and the greedy tokens a weaker check (near-ties), so the agreement column counts
   the leading tokens equal to transformers'.
2. Two workloads, batch 1, greedy, exactly 128 new tokens (min = max, EOS never ends a row
   early), prompts of seeded random ids in [10, 150000) (no special token of either vocabulary):
   ``greedy_b1`` from a 32-token prompt, ``prompt512_b1`` from a 512-token one (its time to
   first token is the prefill figure; for Gemma 3 the generation runs past its 512-token
   sliding window).
3. Runtimes, each in its own worker process, at every thread count (see
   ``fasttx.bench.runner``): ``fasttx`` (``fasttx.load(dir, dtype="f32")``) and ``pytorch``
   (``AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32)``, its default attention).
   Both get the same explicit options (those of the SmolLM2 benchmark).
"""

from __future__ import annotations

from .random_model import RandomModelBenchmark
from .runtimes import FasttxRuntime, TorchRuntime
from .smollm2 import generation_options

NEW_TOKENS = 128
SHORT_PROMPT = 32
LONG_PROMPT = 512
INPUT_SEED = 1234
MODEL_SEED = 0
PROMPT_ID_RANGE = (10, 150000)
WORKLOADS = {"greedy_b1": {"batch": 1, "num_beams": 1, "prompt_len": SHORT_PROMPT},
             "prompt512_b1": {"batch": 1, "num_beams": 1, "prompt_len": LONG_PROMPT}}

# Qwen/Qwen3-0.6B's config.json (its bfloat16 weights become random float32 ones).
QWEN3_CONFIG = {
    "hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "intermediate_size": 3072, "vocab_size": 151936, "tie_word_embeddings": True,
    "hidden_act": "silu", "attention_bias": False, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "max_position_embeddings": 40960, "use_sliding_window": False, "sliding_window": None,
    "max_window_layers": 28, "bos_token_id": 151643, "eos_token_id": 151645, "initializer_range": 0.02,
}
# google/gemma-3-270m's config.json: a full-attention layer after every five sliding ones.
GEMMA3_LAYERS = 18
GEMMA3_CONFIG = {
    "hidden_size": 640, "num_hidden_layers": GEMMA3_LAYERS, "num_attention_heads": 4, "num_key_value_heads": 1,
    "head_dim": 256, "intermediate_size": 2048, "vocab_size": 262144, "tie_word_embeddings": True,
    "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "rms_norm_eps": 1e-6,
    "query_pre_attn_scalar": 256, "sliding_window": 512, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(GEMMA3_LAYERS)],
    "attn_logit_softcapping": None, "final_logit_softcapping": None, "max_position_embeddings": 32768,
    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "initializer_range": 0.02,
}


class DecoderPytorchRuntime(TorchRuntime):
    def __init__(self, model_dir, threads: int):
        super().__init__(threads)
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=self.torch.float32).eval()

    def first_new_column(self, input_ids) -> int:
        return input_ids.shape[1]  # the prompt comes first


class DecoderBenchmark(RandomModelBenchmark):
    """A decoder-only shape; a subclass gives ``name``, ``config_class``, ``config`` and
    ``default_model_dir``."""

    runtimes = ("fasttx", "pytorch")
    labels = {"fasttx": "fasttx f32", "pytorch": "PyTorch fp32"}
    requires = {"fasttx": ("fasttx._native", "numpy"), "pytorch": ("torch", "transformers")}
    packages = {"fasttx": ("fasttx",), "pytorch": ("torch",)}
    needs_fasttx = ("fasttx",)
    workloads = WORKLOADS
    new_tokens = NEW_TOKENS
    must_match = "fasttx/greedy_b1"
    leading_tokens = True
    ratio_columns = (("pytorch", "vs PyTorch"),)
    fasttx_dtypes = {"fasttx": "f32"}
    weight_counterparts = {"pytorch": "fasttx"}
    bandwidth_note = "uses the decode tokens/s (prompt prefill taken out)"

    config_class = ""  # the transformers config class of ``config``
    config: dict = {}

    @property
    def recipe(self):
        return {"version": 1, "config_class": self.config_class, "config": self.config, "seed": MODEL_SEED}

    @property
    def default_out(self):
        return f"BENCHMARKS-{self.name}.json"

    def make_model(self):
        import torch
        import transformers

        torch.manual_seed(MODEL_SEED)
        config = getattr(transformers, self.config_class)(**self.config)
        return transformers.AutoModelForCausalLM.from_config(config).eval().to(torch.float32)

    def prepare(self, args, runtimes, skipped):
        self.build(args)
        return list(runtimes)

    def inputs(self, args):
        import numpy as np

        rng = np.random.default_rng(INPUT_SEED)
        return {wl: rng.integers(*PROMPT_ID_RANGE, size=d["prompt_len"]).tolist() for wl, d in WORKLOADS.items()}

    def workload_inputs(self, workload, pool):
        return [pool[workload]]

    def options(self, workload, new_tokens):
        return generation_options(new_tokens)

    def report_fields(self, args, pool):
        return {
            "model": self.model_field(args),
            "setup": {
                "new_tokens": args.new_tokens, "input_seed": INPUT_SEED, "prompt_id_range": list(PROMPT_ID_RANGE),
                "repeats": args.repeats, "thread_counts": args.thread_counts,
                "workloads": {wl: self.workloads[wl] for wl in args.workloads},
                "generation_options": generation_options(args.new_tokens),
                "schedule": "for each thread count: persistent worker per runtime; warm-up, then "
                            "round-robin per repeat and workload with rotating runtime order",
            },
        }

    def print_header(self, args):
        return (f"greedy_b1: {SHORT_PROMPT}-token prompt; prompt512_b1: {LONG_PROMPT}-token prompt; "
                f"{args.new_tokens} new tokens greedy, batch 1, {args.repeats} repeats")

    def runtime_class(self, runtime):
        return {"fasttx": FasttxRuntime, "pytorch": DecoderPytorchRuntime}[runtime]

    def make_runtime(self, runtime, args):
        if runtime == "fasttx":
            return FasttxRuntime(args.model_dir, args.threads, self.fasttx_dtypes[runtime])
        return DecoderPytorchRuntime(args.model_dir, args.threads)


class Qwen3Benchmark(DecoderBenchmark):
    name = "qwen3"
    config_class = "Qwen3Config"
    config = QWEN3_CONFIG
    default_model_dir = "~/.cache/fasttx-bench/qwen3-0.6b-random"
    bandwidth_note = "Qwen3 uses the decode tokens/s (prompt prefill taken out)"


class Gemma3Benchmark(DecoderBenchmark):
    name = "gemma3"
    config_class = "Gemma3TextConfig"
    config = GEMMA3_CONFIG
    default_model_dir = "~/.cache/fasttx-bench/gemma-3-270m-random"
    bandwidth_note = "Gemma 3 uses the decode tokens/s (prompt prefill taken out)"


QWEN3 = Qwen3Benchmark()
GEMMA3 = Gemma3Benchmark()
