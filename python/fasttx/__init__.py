"""fasttx: fast, faithful transformer text generation on CPU.

    import fasttx
    model = fasttx.load("path/to/t5-small")
    model.generate("translate English to German: Hello", num_beams=4)

The API follows Hugging Face transformers (names, defaults, outputs); see ``fasttx.Model``.
"""

from ._native import ModelFormatError
from ._native import __version__ as __version__
from .generation.scores import GeneratedText, GenerateOutput
from .loading import load
from .model import Model

__all__ = ["load", "Model", "ModelFormatError", "GenerateOutput", "GeneratedText", "__version__"]
