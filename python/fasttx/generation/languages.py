"""``tgt_lang``: finding a translation model's target-language token in its tokenizer.

transformers users write ``forced_bos_token_id=tokenizer.convert_tokens_to_ids("de_DE")`` (mBART),
``tokenizer.get_lang_id("de")`` (M2M100: ``__de__``), ``convert_tokens_to_ids("deu_Latn")`` (NLLB),
or put ``>>de<<`` at the start of the source text (multilingual Marian). ``tgt_lang`` takes the
code as the family spells it, or the bare code, looked up in those token forms.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# The shapes of language tokens, with the language code as group 1.
_M2M100 = re.compile(r"^__([a-z]{2,3}(?:_[A-Za-z]+)?)__$")  # __de__
_MARIAN = re.compile(r"^>>([a-z]{2,3}(?:_[A-Za-z]+)?)<<$")  # >>de<<, >>fra<<: goes in the source
_NLLB = re.compile(r"^([a-z]{2,3})_[A-Z][a-z]{3}$")  # deu_Latn
_MBART = re.compile(r"^([a-z]{2,3})_[A-Z]{2}$")  # de_DE
_SHAPES = (_M2M100, _MARIAN, _NLLB, _MBART)


@dataclass(frozen=True)
class LanguageToken:
    token: str
    id: int
    # Marian's `>>xx<<` tokens select the target language from the start of the SOURCE text;
    # the other families force the token as the first generated one.
    in_source: bool


class LanguageTokens:
    """The language-shaped tokens of one tokenizer (indexed once: a vocabulary of 256k tokens
    takes a fraction of a second)."""

    def __init__(self, tokenizer):
        self._vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
        self._added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        self._by_code: dict[str, list[str]] = {}
        for token in self._vocab:
            for shape in _SHAPES:
                m = shape.match(token)
                if m:
                    self._by_code.setdefault(m.group(1), []).append(token)
                    break

    def _found(self, token: str) -> LanguageToken:
        return LanguageToken(token, self._vocab[token], in_source=bool(_MARIAN.match(token)))

    def lookup(self, code: str) -> LanguageToken:
        """The token ``tgt_lang=code`` means: the exact token when it is one (a special token, or a
        spelling no plain word piece has, like ``de_DE``), else ``__code__``, ``>>code<<``, or the
        one ``code_Xxxx`` / ``code_XX`` token. Unknown or ambiguous codes are a ValueError."""
        if not isinstance(code, str) or not code:
            raise ValueError(f"tgt_lang must be a non-empty string, got {code!r}")
        # A bare alphabetic string ("de") that is only an ordinary word piece is not a language token.
        if code in self._vocab and (code in self._added or not code.isalpha()):
            return self._found(code)
        for form in (f"__{code}__", f">>{code}<<"):
            if form in self._vocab:
                return self._found(form)
        regional = sorted(t for t in self._by_code.get(code, []) if _NLLB.match(t) or _MBART.match(t))
        if len(regional) == 1:
            return self._found(regional[0])
        if regional:
            raise ValueError(f"tgt_lang={code!r} is ambiguous in this tokenizer: pass one of {regional}")
        raise ValueError(self._unknown(code))

    def _unknown(self, code: str) -> str:
        tokens = sorted(t for ts in self._by_code.values() for t in ts)
        if not tokens:
            return (
                f"tgt_lang={code!r}: this tokenizer has no language tokens (looked for {code!r}, "
                f"'__{code}__', '>>{code}<<', '{code}_XX' and '{code}_Xxxx')"
            )
        close = [t for t in tokens if self._code_of(t).startswith(code[:2])]
        close += [t for t in difflib.get_close_matches(code, tokens, n=5, cutoff=0.5) if t not in close]
        hint = f"close matches: {close[:8]}" if close else f"it has {len(tokens)}, e.g. {tokens[:5]}"
        return f"tgt_lang={code!r} is not a language token of this tokenizer; {hint}"

    @staticmethod
    def _code_of(token: str) -> str:
        for shape in _SHAPES:
            m = shape.match(token)
            if m:
                return m.group(1)
        return token

