"""Generation: option resolution, logits processors and the decoding loops."""

from .options import GenerationOptions, resolve

__all__ = ["GenerationOptions", "resolve"]
