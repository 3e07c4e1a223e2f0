"""Type stubs of the native extension ``fasttx._native`` (PyO3, rust/python).

Checked against the built module by ``python -m mypy.stubtest fasttx._native`` (CI, README's test
command): a function added to or changed in the bindings must be written here too."""

from os import PathLike
from typing import Any, Iterator, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ModelFormatError",
    "NativeModel",
    "NativeSession",
    "NativeConstraintEnv",
    "NativeConstraint",
    "NativeConstraintRows",
    "gguf_metadata",
    "GgufArray",
    "gguf_config",
    "architectures",
    "memory_bandwidth",
    "instruction_set",
    "matmul_rate",
    "__version__",
]

__version__: str

class ModelFormatError(ValueError):
    """A weight file or model config is corrupt, inconsistent or of an unsupported kind."""

@final
class NativeModel:
    def __new__(
        cls,
        arch: str,
        config_json: str,
        weight_files: Sequence[Union[str, PathLike[str]]],
        dtype: str,
        threads: int,
    ) -> NativeModel:
        """Loads architecture ``arch`` from ``config_json`` and the weight files (safetensors shards
        or one GGUF file); ``dtype`` is "auto", "f32" or "int8"."""
    @property
    def vocab_size(self) -> int: ...
    @property
    def is_encoder_decoder(self) -> bool: ...
    @property
    def max_positions(self) -> Optional[int]:
        """The position limit that caps generate's default length budget (None: no limit)."""
    @property
    def max_positions_is_hard(self) -> bool:
        """Whether max_positions bounds prompt plus new tokens (learned positions end there)."""
    @property
    def threads(self) -> int: ...
    @property
    def decode_weight_bytes(self) -> int:
        """Bytes of weights one batch-1 decoding step streams (decoder projections and LM head)."""
    def start(
        self, input_ids: npt.NDArray[np.int64], attention_mask: Optional[npt.NDArray[np.int64]] = None
    ) -> NativeSession: ...
    def topk_rows(
        self, scores: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def sample_rows(
        self,
        scores: npt.NDArray[np.float32],
        uniforms: list[float],
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: Optional[float],
        min_keep: int,
    ) -> list[int]:
        """One token per row of ``scores`` [rows, vocab] after transformers' warpers (top_k 0,
        top_p 1.0 and min_p None switch them off), drawn with ``uniforms[row]`` in [0, 1)."""
    def log_softmax_rows(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The log-softmax of each row of ``scores`` [rows, vocab]: the bits of a session step's
        ``log_softmax=True`` output."""
    def warp_rows(
        self,
        scores: npt.NDArray[np.float32],
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: Optional[float],
        min_keep: int,
    ) -> npt.NDArray[np.float32]:
        """``scores`` after the warpers of ``sample_rows``: removed tokens are -inf (beam sampling
        warps its log-probabilities with it)."""

def memory_bandwidth(threads: int, megabytes: int = 1024) -> float:
    """The machine's memory read bandwidth in GB/s (best of parallel reads of a buffer)."""

def matmul_rate(m: int, k: int, n: int, threads: int, repeats: int = 5) -> tuple[float, float]:
    """``(best, median)`` seconds of fasttx's f32 ``y = x @ w.T`` (``x: [m, k]``, ``w: [n, k]``) on
    fixed pseudo-random data with ``threads`` threads, over ``repeats`` runs after a warm-up."""

def instruction_set() -> str:
    """The SIMD path the kernels run with: "avx512", "avx2", "neon" or "scalar" (the names
    ``FASTTX_ISA`` takes), after detection and any ``FASTTX_ISA`` override."""

def gguf_metadata(path: Union[str, PathLike[str]]) -> dict[str, Any]:
    """The metadata of a GGUF file: keys as stored, scalars as Python values, arrays as
    :class:`GgufArray` (read from the file only when their elements are asked for)."""

@final
class GgufArray:
    """One array of a GGUF file's metadata: a read-only sequence whose elements are decoded from
    the file when read (``len()`` decodes nothing). ``numpy.asarray`` gives numbers as one compact
    array; ``tolist()`` gives every element as a Python object."""

    @property
    def type(self) -> str:
        """The elements' GGUF type: "u8", "i32", "f32", "bool", "string", "array", ..."""
    def __len__(self) -> int: ...
    def __getitem__(self, key: Union[int, slice], /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def tolist(self) -> list[Any]: ...
    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> Any: ...
    def __copy__(self) -> GgufArray: ...
    def __deepcopy__(self, _memo: Any) -> GgufArray: ...

def architectures() -> list[dict[str, Any]]:
    """The supported architectures, one dict each: ``model_type`` (str), ``encoder_decoder``
    (bool), ``gguf`` (the GGUF ``general.architecture`` whose files load as it, or None)."""

def gguf_config(path: Union[str, PathLike[str]]) -> tuple[str, dict[str, Any]]:
    """``(model_type, config)``: what a GGUF file loads as, and transformers' config.json for it."""

@final
class NativeSession:
    @property
    def rows(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def cache_bytes_per_position(self) -> int:
        """Bytes of self-attention cache one row takes per position."""
    @property
    def logits_finite(self) -> Optional[bool]:
        """Whether every logit of the last step was finite, where the step found out on its way
        (None: unknown, check the values)."""
    def reserve(self, positions: int) -> None:
        """Makes room for ``positions`` positions per row in the self-attention cache at once."""
    def step(
        self,
        tokens: npt.NDArray[np.int64],
        mask: Optional[npt.NDArray[np.int64]] = None,
        positions: Optional[npt.NDArray[np.int64]] = None,
        last_only: bool = True,
        log_softmax: bool = False,
    ) -> npt.NDArray[np.float32]:
        """Feeds ``tokens`` [rows, n] (with an optional padding ``mask`` and position ids
        [rows, n]); returns float32 logits [rows, vocab] (``last_only``) or [rows, n, vocab], as
        log-probabilities when ``log_softmax`` is set."""
    def reorder(self, source: Sequence[int]) -> None: ...
    def rewind(self, length: int) -> None:
        """Takes back every position from ``length`` on (draft tokens the model rejected), as if
        the steps had fed only the positions before it."""
    def join(self, other: NativeSession) -> None:
        """Appends ``other``'s rows after this session's (continuous batching); ``other`` is left
        without rows and raises ValueError when used again. Both must be decoder-only sessions of
        the same model. Each row's logits stay the bits it gives decoded alone."""

@final
class NativeConstraintEnv:
    """The tokenizer side of constraints for one model: every token id's bytes, its special ids
    and EOS ids."""

    def __new__(cls, data: bytes, lengths: Sequence[int], special_ids: Sequence[int], eos_ids: Sequence[int]) -> NativeConstraintEnv: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def eos_ids(self) -> list[int]: ...
    def compile(self, kind: str, spec: Union[str, Sequence[str]]) -> NativeConstraint: ...

@final
class NativeConstraint:
    """A compiled constraint (``NativeConstraintEnv.compile``)."""

@final
class NativeConstraintRows:
    """The constraint state of a generation's rows (None: an unconstrained row)."""

    def __new__(
        cls, constraints: Sequence[Optional[NativeConstraint]], passthrough: Sequence[int] = ...
    ) -> NativeConstraintRows: ...
    def __len__(self) -> int: ...
    def mask(
        self, scores: npt.NDArray[np.float32], rows: Sequence[int], model: Optional[NativeModel] = None
    ) -> list[bool]: ...
    def consume(self, rows: Sequence[int], tokens: Sequence[int], strict: bool = True) -> list[bool]: ...
    def reorder(self, index: Sequence[int]) -> None: ...
    def constrained(self, row: int) -> bool: ...
    def allowed(self, row: int) -> list[int]: ...
    def accepting(self, row: int) -> bool: ...
    def stopped(self, row: int) -> bool: ...
    def rollback(self, row: int, tokens: int) -> None: ...
