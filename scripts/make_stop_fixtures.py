#!/usr/bin/env python3
"""Records transformers' generation with ``stop_strings`` on the committed tiny models, for
``tests/test_stop_strings.py``.

    pip install torch==2.15.0 transformers==5.24.0
    python scripts/make_stop_fixtures.py

For each model and prompt it first generates without stop strings, then picks stop strings
from that output that span a token boundary (the last characters of one token's text and the
first of the next), and generates again with ``stop_strings=[...]`` (greedy and beam search).
transformers' ``StopStringCriteria`` ends a sequence (greedy) or a beam candidate (beam search,
where it joins the finished hypotheses as EOS does) at the token that completes a stop string.
Writes ``tests/fixtures/stop_strings/expected.json``.
"""

from __future__ import annotations

import json

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedTokenizerFast

from fixturelib import FIXTURES, cache_kwargs

OUT = FIXTURES / "stop_strings" / "expected.json"

PROMPTS = [
    "Translate English to German: The house is wonderful.",
    "Question: What is the capital of France?",
    "Rust is a systems programming language that runs fast.",
]
MODES = {
    "greedy": {"max_new_tokens": 16},
    "beam3": {"num_beams": 3, "max_new_tokens": 12, "length_penalty": 1.0},
}


def load(name: str):
    d = FIXTURES / name
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    cls = AutoModelForSeq2SeqLM if name.startswith("t5") else AutoModelForCausalLM
    return cls.from_pretrained(d, dtype=torch.float32).eval(), tok


def new_tokens(model, ids, out) -> list[int]:
    seq = out[0].tolist()
    if not model.config.is_encoder_decoder:
        seq = seq[len(ids) :]
    else:
        seq = seq[1:]  # the decoder start token
    pad = model.generation_config.pad_token_id
    while seq and pad is not None and seq[-1] == pad and len(seq) > 1:
        # Trailing padding of a beam hypothesis shorter than the longest (batch 1: none expected).
        seq.pop()
    return seq


def spanning_stops(tok, tokens: list[int]) -> list[str]:
    """Stop strings from the middle of the output that cross a token boundary."""
    pieces = [tok.decode(tokens[: i + 1], skip_special_tokens=True) for i in range(len(tokens))]
    out = []
    for i in range(2, len(tokens) - 2):
        prev, cur = pieces[i - 1], pieces[i]
        if len(cur) - len(prev) >= 2 and len(prev) >= 2 and cur.startswith(prev):
            s = prev[-2:] + cur[len(prev) : len(prev) + 2]
            if s.isprintable() and s.strip() == s and "\ufffd" not in s:
                out.append(s)
    return out


def main() -> None:
    cases = []
    for name in ("t5_v1_1", "llama_gqa"):
        model, tok = load(name)
        for mode, options in MODES.items():
            for prompt in PROMPTS:
                ids = tok(prompt, add_special_tokens=True)["input_ids"]
                x = torch.tensor([ids])
                with torch.no_grad():
                    free = new_tokens(model, ids, model.generate(x, attention_mask=torch.ones_like(x), **options, **cache_kwargs(model)))
                stops = spanning_stops(tok, free)
                if not stops:
                    continue
                stop = stops[len(stops) // 2]
                with torch.no_grad():
                    out = model.generate(
                        x, attention_mask=torch.ones_like(x), stop_strings=[stop], tokenizer=tok, **options, **cache_kwargs(model)
                    )
                seq = new_tokens(model, ids, out)
                cases.append(
                    {
                        "model": name,
                        "mode": mode,
                        "prompt": prompt,
                        "input_ids": ids,
                        "options": options,
                        "stop": [stop],
                        "unstopped": free,
                        "sequence": seq,
                        "text": tok.decode(seq, skip_special_tokens=True),
                    }
                )
                print(name, mode, repr(stop), len(free), "->", len(seq))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "cases": cases},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
