"""Runtime wrappers shared by the benchmarks (worker side): fasttx and PyTorch transformers.

A runtime wrapper: ``__init__`` loads the model, ``versions()`` imports its libraries and names
them, ``prepare(ids)`` turns input ids into its own input, ``generate(prepared, options)``
returns the new tokens only, one list per row; ``ready_info()`` (optional) adds to the ready
message.  Libraries are imported inside the methods: this module is imported by every worker.
"""

from __future__ import annotations

from .bandwidth import decode_weight_bytes


def left_padded(ids) -> tuple[list[list[int]], list[list[int]]]:
    """Rows of different lengths as a decoder-only batch: ``(ids, attention_mask)``, each row
    left-padded to the longest with id 0 under mask 0 (masked positions are never attended to,
    so the pad id does not matter); rows of one length come back as they are, mask all ones."""
    width = max(len(r) for r in ids)
    return ([[0] * (width - len(r)) + list(r) for r in ids],
            [[0] * (width - len(r)) + [1] * len(r) for r in ids])


class FasttxRuntime:
    def __init__(self, path: str, threads: int, dtype: str):
        import fasttx

        self.model = fasttx.load(str(path), dtype=dtype, threads=threads)

    @staticmethod
    def versions() -> dict:
        import fasttx

        return {"fasttx": fasttx.__version__}

    def ready_info(self) -> dict:
        return {"decode_weight_bytes": decode_weight_bytes(self.model)}

    def prepare(self, ids):
        import numpy as np

        padded, mask = left_padded(ids)
        return np.asarray(padded, dtype=np.int64), np.asarray(mask, dtype=np.int64)

    def generate(self, prepared, options):
        input_ids, attention_mask = prepared
        return self.model.generate_ids(input_ids, attention_mask=attention_mask, **options)


class TorchRuntime:
    """``model.generate`` of a transformers model under ``torch.inference_mode()``; a subclass
    loads ``self.model`` after ``super().__init__(threads)`` and says which output columns are new."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    @staticmethod
    def versions() -> dict:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def prepare(self, ids):
        padded, mask = left_padded(ids)
        return self.torch.tensor(padded, dtype=self.torch.long), self.torch.tensor(mask, dtype=self.torch.long)

    def generate(self, prepared, options):
        input_ids, attention_mask = prepared
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **options)
        return out[:, self.first_new_column(input_ids):].tolist()

    def first_new_column(self, input_ids) -> int:
        """Where the new tokens start in ``generate``'s output."""
        raise NotImplementedError
