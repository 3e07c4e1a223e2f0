"""Turning generated tokens into text: stop strings, transformers' space clean-up, and incremental
decoding for streams that never split a character or a word piece."""

from __future__ import annotations

from typing import Callable, Sequence


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (applied when the tokenizer config asks for it)."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index where the earliest stop string starts in ``text``, or -1."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else -1


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    i = find_stop(text, stops)
    return text if i < 0 else text[:i]


class TextAssembler:
    """Accumulates tokens and hands out the text that is safe to show so far.

    Held back until more tokens arrive: a trailing incomplete UTF-8 sequence (decoded as U+FFFD),
    the text after the last whitespace (the next token may still merge into that word, or a
    tokenizer clean-up rule may change it), and any tail that could be the start of a stop string.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str]):
        self._decode = decode
        self._stops = list(stops)
        self._tokens: list[int] = []
        self._emitted = ""
        self.stopped = False

    def extend(self, tokens: Sequence[int]) -> None:
        self._tokens.extend(tokens)

    def take(self, *, final: bool) -> str:
        text = self._decode(self._tokens)
        cut = find_stop(text, self._stops)
        if cut >= 0:
            text, self.stopped, final = text[:cut], True, True
        if not final:
            text = text.rstrip("\ufffd")
            ws = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
            text = text[:ws] if ws >= 0 else ""
            for s in self._stops:  # hold back a possible beginning of a stop string
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        text = text[:-k]
                        break
        if not text.startswith(self._emitted) or len(text) <= len(self._emitted):
            return ""
        piece = text[len(self._emitted) :]
        self._emitted = text
        return piece
