"""Marian translation (opus-mt-en-de shape): fasttx vs PyTorch transformers vs CTranslate2 on CPU.

Usage::

    fasttx bench marian [--threads N | --threads-list 1,2,4] [--repeats 3] [--out BENCHMARKS-marian.json]

The T5 benchmark (``fasttx.bench.t5``: runtimes, thread sweep, interleaved repeats, metrics,
CTranslate2 conversion) on the shape of Helsinki-NLP/opus-mt-en-de, CTranslate2's home ground:

1. Model: ``MarianMTModel`` from opus-mt-en-de's ``config.json`` written out below (6+6 layers,
   d_model 512, 8 heads, FFN 2048, vocabulary 58101 with ``<pad>`` last, swish, sinusoidal
   positions, ``scale_embedding``, tied embeddings), random weights (``torch.manual_seed(0)``),
   ``final_logits_bias`` drawn too (zeros would let CTranslate2's converter drop it, and every
   runtime should add it), and opus-mt-en-de's ``generation_config.json``: 4 beams,
   ``renormalize_logits``, ``bad_words_ids [[pad]]``, forced EOS, ``max_length`` 512.  Saved with
   ``save_pretrained`` (float32), converted once for CTranslate2 (float32; int8 at load).
2. Workloads, 32-token sources (31 seeded random ids in [2, 58100), then ``</s>`` as
   MarianTokenizer ends a source), exactly 64 new tokens (min = max): ``beam4_b1`` (batch 1,
   4 beams) and ``greedy_b32`` (32 different sources, greedy).
3. The same work in every runtime: fasttx and transformers read the directory's generation
   config (renormalised beam scores, the pad token banned, EOS forced as the last token); the
   workload's ``num_beams`` and the new-token counts are passed explicitly.  CTranslate2's
   converter removes ``<pad>`` from the vocabulary (so it can never be generated: the ban) and
   starts the decoder from a zero embedding (the pad embedding is zero); it has no forced EOS,
   so its last token may differ from the others'.
"""

from __future__ import annotations

from . import t5
from .random_model import VocabOnlyTokenizer
from .stats import check_agreement

SOURCE_LEN = 32
NEW_TOKENS = 64
INPUT_SEED = 1234
MODEL_SEED = 0
VOCAB_SIZE = 58101
EOS, UNK, PAD = 0, 1, 58100
SOURCE_ID_RANGE = (2, PAD)  # neither EOS, UNK nor PAD
BATCH = 32

# Helsinki-NLP/opus-mt-en-de's config.json (model fields; the generation fields are below).
CONFIG = {
    "activation_function": "swish", "d_model": 512, "vocab_size": VOCAB_SIZE, "decoder_vocab_size": VOCAB_SIZE,
    "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8, "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "max_position_embeddings": 512,
    "scale_embedding": True, "share_encoder_decoder_embeddings": True, "tie_word_embeddings": True,
    "static_position_embeddings": True, "normalize_before": False, "normalize_embedding": False,
    "add_bias_logits": False, "add_final_layer_norm": False,
    "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0, "init_std": 0.02,
    "bos_token_id": EOS, "eos_token_id": EOS, "pad_token_id": PAD, "decoder_start_token_id": PAD,
    "forced_eos_token_id": EOS,
}
# Helsinki-NLP/opus-mt-en-de's generation_config.json.
GENERATION_CONFIG = {
    "bad_words_ids": [[PAD]], "bos_token_id": EOS, "decoder_start_token_id": PAD, "eos_token_id": EOS,
    "forced_eos_token_id": EOS, "max_length": 512, "num_beams": 4, "pad_token_id": PAD,
    "renormalize_logits": True,
}
RECIPE = {"version": 1, "config": CONFIG, "generation_config": GENERATION_CONFIG, "seed": MODEL_SEED,
          "final_logits_bias": "normal(0, 0.02) after the weights"}
WORKLOADS = {"beam4_b1": {"batch": 1, "num_beams": 4}, "greedy_b32": {"batch": BATCH, "num_beams": 1}}
DEFAULT_MODEL_DIR = "~/.cache/fasttx-bench/opus-mt-en-de-random"


def make_model():
    """The random opus-mt-en-de-shaped model (float32, seeded) with its generation config."""
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    torch.manual_seed(MODEL_SEED)
    model = MarianMTModel(MarianConfig(**CONFIG)).eval().to(torch.float32)
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.02)
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    return model


def vocab_tokenizer(vocab_size: int) -> VocabOnlyTokenizer:
    """CTranslate2's stand-in tokenizer: Marian's special tokens at their ids (``</s>`` 0, ``<unk>``
    1, ``<pad>`` last, which the converter then drops)."""
    return VocabOnlyTokenizer(vocab_size, {EOS: "</s>", UNK: "<unk>", PAD: "<pad>"},
                              {"eos": EOS, "unk": UNK, "pad": PAD})


def make_inputs() -> list[list[int]]:
    """BATCH fixed sources; the batch-1 workload uses the first one."""
    import numpy as np

    rng = np.random.default_rng(INPUT_SEED)
    ids = rng.integers(*SOURCE_ID_RANGE, size=(BATCH, SOURCE_LEN - 1))
    return [row + [EOS] for row in ids.tolist()]


class PytorchRuntime(t5.PytorchRuntime):
    model_class = "MarianMTModel"


class MarianBenchmark(t5.T5Benchmark):
    name = "marian"
    workloads = WORKLOADS
    new_tokens = NEW_TOKENS
    default_out = "BENCHMARKS-marian.json"
    must_match = "fasttx/greedy_b32"
    bandwidth_note = ("Marian uses the decode tokens/s (the encoder and first step taken out); "
                      "beam4_b1 reads the weights once per step for its 4 beams")
    recipe = RECIPE
    default_model_dir = DEFAULT_MODEL_DIR
    source_len = SOURCE_LEN
    input_seed = INPUT_SEED
    runtime_classes = {**t5.RUNTIME_CLASSES, "pytorch": PytorchRuntime}

    def make_model(self):
        return make_model()

    def vocab_tokenizer(self, vocab_size):
        return vocab_tokenizer(vocab_size)

    def inputs(self, args):
        return make_inputs()

    def check_agreement(self, results, workloads, warnings):
        # Leading tokens too: CTranslate2, without a forced EOS, differs from the others in the
        # last token at least, so "identical sequences" alone would say nothing about it.
        return check_agreement(results, workloads, warnings, reference=self.reference,
                               must_match=self.must_match, leading=True)

    def report_fields(self, args, pool):
        fields = super().report_fields(args, pool)
        fields["setup"]["same_work"] = (
            "fasttx and transformers: the directory's generation_config (renormalize_logits, "
            "bad_words_ids [[pad]], forced_eos_token_id) with num_beams and min/max_new_tokens given; "
            "CTranslate2: pad removed from its vocabulary by the converter, no forced EOS")
        return fields


BENCHMARK = MarianBenchmark()
