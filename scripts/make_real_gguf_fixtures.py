"""Records what transformers and llama.cpp do with the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF,
for tests/test_real_gguf.py.

    python scripts/fetch_models.py --only qwen2.5-coder      # into $FASTTX_HOME
    pip install torch transformers accelerate gguf llama-cpp-python   # used: see "versions" in the output
    python scripts/make_real_gguf_fixtures.py [--gguf PATH]

With ``--model gemma3``, the same for Gemma 3 270M Q4_K_M into
tests/fixtures/real/gemma-3-270m-q4_k_m.json (tokenizer cases with Gemma's specials and
whitespace runs; the file has no chat template, so the greedy prompt is Gemma's user turn format,
tokenized by transformers and checked against llama.cpp's own tokenization).

Writes tests/fixtures/real/qwen2.5-coder-0.5b-q4_k_m.json:

* ``tokenizer_cases``: transformers' ids (``AutoTokenizer.from_pretrained(dir, gguf_file=name)``,
  which builds the tokenizer from the GGUF metadata, as fasttx does) for strings chosen to exercise
  Qwen2's split regex and byte-level BPE: code, unicode, digits, whitespace runs, special tokens
  inside text; and its decode of those ids.
* ``chat_cases``: ``apply_chat_template`` of the GGUF's own template (text and ids) for a
  system+user conversation and for a user-only one (the template adds Qwen's default system).
* ``llama_cpp_greedy``: llama.cpp (llama-cpp-python, n_threads=2, default settings: repacking on)
  on the user-only chat prompt "Write a short news report about AI": 48 greedy new tokens, and at
  each step the two largest logits (ids and values) and their gap. The gap says where llama.cpp's
  own choice is a near-tie that a different summation order may flip.

The prompt llama.cpp gets is transformers' rendering and tokenization; llama.cpp's own rendering
(its Jinja2 chat formatter) and tokenization of the same messages must agree with it, or the script
stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fetch_models import MODELS, default_home

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "real" / "qwen2.5-coder-0.5b-q4_k_m.json"
QWEN = next(m for m in MODELS if m.key == "qwen2.5-coder")

GREEDY_MESSAGES = [{"role": "user", "content": "Write a short news report about AI"}]
GREEDY_NEW_TOKENS = 48
LLAMA_THREADS = 2

CHAT_CASES = {
    "system_user": [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "What does `git rebase -i HEAD~3` do?"},
    ],
    "user_only": GREEDY_MESSAGES,
}

TOKENIZER_STRINGS = [
    "",
    "Hello, world!",
    "Write a short news report about AI",
    # code: indentation, tabs, operators, brackets, comments
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\t// dot\n}\n",
    "const f = async (x) => { await fetch(`/api/${x}`); };  /* TODO */",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "#include <stdio.h>\r\nint main(){printf(\"%d\\n\", 42);}\r\n",
    # digits: Qwen2 splits every digit
    "1234567890 3.14159 1,000,000 2024-05-24 0x1F 1e-9 -17",
    "Version 2.5.1 was released on 12/03/2024 at 10:45:30.",
    # whitespace runs
    "a  b   c    d",
    "   leading and trailing   ",
    "line one\n\n\nline four\n \n\t\n",
    "\t\t\ttabs\t and\u00a0no-break\u3000ideographic space",
    "     ",
    "\n",
    # unicode: accents, CJK, emoji (multi-codepoint), RTL, combining marks, math
    "Café naïve façade — «quoted» ‘single’ “double”",
    "你好，世界！今天天气很好。这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな",
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ 🤖",
    "مرحبا بالعالم שלום עולם",
    "e\u0301 a\u0308 ñ Å Ω ∑ ∫ √ ≤ ≥ ∞",
    "Привет, мир! Ελληνικά κείμενα.",
    # contractions, case
    "I'm sure you're right, but THEY'LL say it's what we'd've done.",
    "camelCaseIdentifier snake_case_name SCREAMING_CASE kebab-case",
    # special tokens inside text, chat template text
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|>",
    "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c<|fim_middle|>",
    "<|im_start|> not a token: <|im_start |>< |im_end|>",
    # odd punctuation runs and URLs
    "!!!???... --- ***  ~~~ ```python\nprint('x')\n```",
    "https://example.com/path?q=a+b&lang=en#frag user@example.org",
]


def tokenizer_cases(tok) -> list[dict]:
    cases = []
    for text in TOKENIZER_STRINGS:
        ids = tok(text).input_ids  # add_special_tokens=True: Qwen adds nothing (add_bos_token false)
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    return cases


def chat_cases(tok) -> dict:
    out = {}
    for name, messages in CHAT_CASES.items():
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out[name] = {"messages": messages, "prompt": text, "ids": tok(text, add_special_tokens=False).input_ids}
    return out


def llama_cpp_prompt_ids(llm, messages) -> list[int]:
    """The prompt as llama.cpp renders (its Jinja2 formatter on the GGUF's template) and tokenizes it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token_id: int) -> str:
        return "" if token_id < 0 else llm.detokenize([token_id], special=True).decode("utf-8", "replace")

    fmt = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
        add_generation_prompt=True,
    )
    return llm.tokenize(fmt(messages=messages).prompt.encode("utf-8"), add_bos=False, special=True)


def llama_cpp_greedy(gguf: Path, prompt_ids: list[int]) -> dict:
    """Greedy decoding step by step: the prompt in one batch, then one token per eval, as
    llama.cpp's generate does; at each step the argmax of the last position's logits."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_threads=LLAMA_THREADS, n_threads_batch=LLAMA_THREADS,
                          n_ctx=512, verbose=False)
    own = llama_cpp_prompt_ids(llm, GREEDY_MESSAGES)
    if own != prompt_ids:
        raise SystemExit(f"llama.cpp renders/tokenizes the chat prompt differently:\n{own}\nvs transformers'\n{prompt_ids}")
    llm.reset()
    llm.eval(prompt_ids)
    n_vocab = llm.n_vocab()
    tokens, top2_ids, top2_values, gaps = [], [], [], []
    for _ in range(GREEDY_NEW_TOKENS):
        # The last evaluated position's logits (Llama.scores is left empty without logits_all).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
        order = np.argsort(-logits, kind="stable")[:2]
        token = int(order[0])  # llama.cpp's greedy sampler takes the first maximum, as argsort does here
        tokens.append(token)
        top2_ids.append([int(i) for i in order])
        top2_values.append([float(logits[i]) for i in order])
        gaps.append(float(logits[order[0]] - logits[order[1]]))
        llm.eval([token])
    # The same path through llama.cpp's own greedy sampler, as `fasttx bench` drives it.
    llm.reset()
    sampled = []
    for token in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, typical_p=1.0, temp=0.0,
                              repeat_penalty=1.0, reset=True):
        sampled.append(int(token))
        if len(sampled) == GREEDY_NEW_TOKENS:
            break
    if sampled != tokens:
        raise SystemExit(f"llama.cpp's greedy sampler chose {sampled}\nthe argmax path is {tokens}")
    return {
        "n_threads": LLAMA_THREADS,
        "messages": GREEDY_MESSAGES,
        "prompt_ids": prompt_ids,
        "new_tokens": tokens,
        "text": llm.detokenize(tokens).decode("utf-8", "replace"),
        "top2_ids": top2_ids,
        "top2_logits": top2_values,
        "top2_gap": gaps,
    }


# ------------------------------------------------------------------------------ Gemma 3 270M

GEMMA = next(m for m in MODELS if m.key == "gemma3")
GEMMA_OUT = ROOT / "tests" / "fixtures" / "real" / "gemma-3-270m-q4_k_m.json"

# The file carries no chat template (transformers has none to apply either): Gemma's turn format,
# as Gemma 3's own template renders a user turn with the generation prompt.
GEMMA_TURN = "<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n"
GEMMA_GREEDY_CONTENT = "Write a short news report about AI"

GEMMA_TOKENIZER_STRINGS = TOKENIZER_STRINGS + [
    # Gemma's specials and turn markers inside text, whitespace runs (stored as real spaces in the
    # file), a literal "▁"
    "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><mask><unk> <start_of_image><end_of_turn >",
    "  two leading spaces", "a\n\n\nb", "x" * 40 + "  \t\t" + " " * 33 + "end",
    "\u2581already\u2581spelled \u2581\u2581",
]


def gemma_main(gguf: Path) -> None:
    import llama_cpp
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    global TOKENIZER_STRINGS
    TOKENIZER_STRINGS = GEMMA_TOKENIZER_STRINGS
    cases = tokenizer_cases(tok)  # add_special_tokens=True: <bos> first
    prompt = GEMMA_TURN.format(content=GEMMA_GREEDY_CONTENT)
    ids = tok(prompt).input_ids
    llm = llama_cpp.Llama(model_path=str(gguf), n_threads=LLAMA_THREADS, n_ctx=512, verbose=False)
    own = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    if own != ids:
        raise SystemExit(f"llama.cpp tokenizes the prompt differently:\n{own}\nvs transformers'\n{ids}")
    del llm
    greedy = greedy_steps(gguf, ids)
    greedy["transformers_argmax"] = transformers_argmax(gguf, ids, greedy["new_tokens"])
    record = {
        "model": {"file": GEMMA.file_name, "size_bytes": GEMMA.size, "sha256": GEMMA.sha256},
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "llama_cpp_python": llama_cpp.__version__},
        "tokenizer_cases": cases,
        "chat_prompt": {"text": prompt, "ids": ids},
        "llama_cpp_greedy": greedy,
    }
    GEMMA_OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {GEMMA_OUT.relative_to(ROOT)}")
    print(greedy["text"])
    print("smallest top-2 gaps:", sorted((g, i) for i, g in enumerate(greedy["top2_gap"]))[:5])


def transformers_argmax(gguf: Path, prompt_ids: list[int], tokens: list[int]) -> list[int]:
    """transformers' float32 model of the file (GGUF loader: weights dequantized) fed llama.cpp's
    path: its argmax at each step. Where it differs from llama.cpp's token, llama.cpp's own
    arithmetic (activations quantized to 8 bits per block) decided, not the model."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + tokens])).logits[0]
    n = len(prompt_ids)
    return logits[n - 1 : n - 1 + len(tokens)].argmax(-1).tolist()


def greedy_steps(gguf: Path, prompt_ids: list[int]) -> dict:
    """llama_cpp_greedy's argmax path for a prompt given as ids (no template check)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_threads=LLAMA_THREADS, n_threads_batch=LLAMA_THREADS,
                          n_ctx=512, verbose=False)
    llm.eval(prompt_ids)
    n_vocab = llm.n_vocab()
    tokens, top2_ids, top2_values, gaps = [], [], [], []
    for _ in range(GREEDY_NEW_TOKENS):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
        order = np.argsort(-logits, kind="stable")[:2]
        tokens.append(int(order[0]))
        top2_ids.append([int(i) for i in order])
        top2_values.append([float(logits[i]) for i in order])
        gaps.append(float(logits[order[0]] - logits[order[1]]))
        llm.eval([int(order[0])])
    return {"n_threads": LLAMA_THREADS, "prompt_ids": prompt_ids, "new_tokens": tokens,
            "text": llm.detokenize(tokens).decode("utf-8", "replace"), "top2_ids": top2_ids,
            "top2_logits": top2_values, "top2_gap": gaps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", type=Path, default=None, help=f"the Qwen file (default: $FASTTX_HOME/{QWEN.file_name})")
    p.add_argument("--model", choices=["qwen2.5-coder", "gemma3"], default="qwen2.5-coder")
    args = p.parse_args()
    if args.model == "gemma3":
        gguf = (args.gguf or default_home() / GEMMA.file_name).expanduser().resolve()
        if not gguf.is_file():
            raise SystemExit(f"{gguf} not found: python scripts/fetch_models.py --only gemma3")
        return gemma_main(gguf)
    gguf = (args.gguf or default_home() / QWEN.file_name).expanduser().resolve()
    if not gguf.is_file():
        raise SystemExit(f"{gguf} not found: python scripts/fetch_models.py --only qwen2.5-coder")

    import llama_cpp
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    chats = chat_cases(tok)
    greedy = llama_cpp_greedy(gguf, chats["user_only"]["ids"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": {"file": QWEN.file_name, "size_bytes": QWEN.size, "sha256": QWEN.sha256},
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "llama_cpp_python": llama_cpp.__version__},
        "tokenizer_cases": tokenizer_cases(tok),
        "chat_cases": chats,
        "llama_cpp_greedy": greedy,
    }
    OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    print(greedy["text"])
    print("smallest top-2 gaps:", sorted((g, i) for i, g in enumerate(greedy["top2_gap"]))[:5])


if __name__ == "__main__":
    sys.exit(main())
