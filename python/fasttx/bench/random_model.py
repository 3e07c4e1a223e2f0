"""Random-weight benchmark models: built once with transformers, cached on disk, converted for CTranslate2.

A benchmark of a model *shape* (t5-small, opus-mt-en-de, Qwen3-0.6B, gemma-3-270m) needs no
trained weights: speed does not depend on their values.  ``build_once`` creates the model from a
hand-written config with a fixed torch seed, saves it with ``save_pretrained`` (float32
safetensors) and stamps the directory with its recipe, so that a later run reuses it and a
changed recipe rebuilds it.  ``convert_ct2_once`` converts such a directory for CTranslate2,
which insists on a tokenizer to name the vocabulary: ``VocabOnlyTokenizer`` stands in for it.

``RandomModelBenchmark`` is the base of such benchmarks (``--model-dir``, the build in
``prepare``).  torch, transformers and ctranslate2 are imported inside the functions that build
and convert, which run in the parent process only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .benchmark import Benchmark

STAMP = "bench_recipe.json"


def recipe_matches(model_dir: Path, recipe: dict, weights: tuple = ("model.safetensors",
                                                                     "model.safetensors.index.json")) -> bool:
    """Whether ``model_dir`` holds weights (one of ``weights``) built from ``recipe``."""
    stamp = model_dir / STAMP
    return (any((model_dir / w).is_file() for w in weights) and stamp.is_file()
            and json.loads(stamp.read_text()) == recipe)


def build_once(model_dir: Path, recipe: dict, make_model: Callable, what: str) -> None:
    """Save ``make_model()`` (a transformers model, float32) to ``model_dir`` unless a model of
    ``recipe`` is there already.  ``make_model`` seeds torch itself; ``what`` names the model in
    the messages (``"fasttx bench t5: ..."``)."""
    if recipe_matches(model_dir, recipe):
        return
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"{what}: building the benchmark model in {model_dir} needs torch and transformers ({exc}); "
            "install them (pip install torch transformers) or pass --model-dir with a model built earlier"
        ) from exc
    print(f"{what}: building the random-weight model in {model_dir} ...", flush=True)
    model = make_model()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: an interrupted run never leaves a half-written
    # directory that a later run would take for a valid cache.
    tmp = Path(tempfile.mkdtemp(prefix=model_dir.name + ".tmp", dir=model_dir.parent))
    model.save_pretrained(tmp)
    (tmp / STAMP).write_text(json.dumps(recipe))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    tmp.rename(model_dir)


class VocabOnlyTokenizer:
    """The part of a tokenizer CTranslate2's converter reads.

    The benchmark models have no trained tokenizer (the runtimes get token ids), but the
    converter insists on one to name the vocabulary.  Synthetic names (``tok<id>``) keep the
    id -> token mapping one-to-one; ``specials`` (id -> name) gives the special tokens their
    model's ids, and ``roles`` (``"eos"`` -> id, ...) the ``<role>_token`` attributes the
    converter asks for.
    """

    def __init__(self, vocab_size: int, specials: dict, roles: dict):
        self.tokens = [specials.get(i, f"tok{i}") for i in range(vocab_size)]
        for role, token_id in roles.items():
            setattr(self, f"{role}_token", self.tokens[token_id])

    def get_vocab(self) -> dict:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, ids):
        return self.tokens[ids] if isinstance(ids, int) else [self.tokens[i] for i in ids]


def convert_ct2_once(model_dir: Path, ct2_dir: Path, recipe: dict, tokenizer: Callable) -> None:
    """Convert the HF directory to CTranslate2 (float32: ``quantization=None`` keeps the stored
    dtype; int8 is chosen at load with ``compute_type``) unless already done for ``recipe``.
    ``tokenizer(vocab_size)`` makes the converter's ``VocabOnlyTokenizer``."""
    if recipe_matches(ct2_dir, recipe, weights=("model.bin",)):
        return
    import ctranslate2.converters
    from transformers import AutoConfig

    vocab_size = AutoConfig.from_pretrained(model_dir).vocab_size

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, *args, **kwargs):
            return tokenizer(vocab_size)

    print(f"converting to CTranslate2 float32 in {ct2_dir} ...", flush=True)
    Converter(str(model_dir)).convert(str(ct2_dir), quantization=None, force=True)
    (ct2_dir / STAMP).write_text(json.dumps(recipe))


class RandomModelBenchmark(Benchmark):
    """A benchmark of a random-weight model built once in ``--model-dir``.

    A subclass gives ``recipe`` (stamped into the directory: a changed recipe rebuilds the model),
    ``default_model_dir`` and ``make_model()`` (the seeded transformers model).
    """

    recipe: dict = {}
    default_model_dir = ""

    def make_model(self):
        raise NotImplementedError

    def add_model_arguments(self, p):
        p.add_argument("--model-dir", type=Path, default=Path(self.default_model_dir).expanduser(),
                       help=f"where the random model is built once (default {self.default_model_dir})")

    def finish_args(self, args, p):
        args.model_dir = Path(args.model_dir).expanduser().absolute()
        return super().finish_args(args, p)

    def build(self, args) -> None:
        build_once(args.model_dir, self.recipe, self.make_model, f"fasttx bench {self.name}")

    def worker_args(self, args):
        return ["--model-dir", str(args.model_dir)]

    def model_path(self, args):
        return str(args.model_dir)

    def model_field(self, args) -> dict:
        """The report's ``model``: the directory's name and recipe (where it was built is this
        machine's business)."""
        return {"name": args.model_dir.name, "recipe": self.recipe}
