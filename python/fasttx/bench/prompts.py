"""The prompts of the chat-model benchmarks (SmolLM2, Qwen2.5-Coder): the 512-token prompt of
``prompt512_b1`` and the eight conversations of ``batch8``, built the same way for every model.

Every builder takes the model (``chat_prompt`` and ``tokenizer``): the ids depend on its template
and vocabulary; they are built once, by fasttx, in the benchmark's parent process, and every
runtime gets the same ids.
"""

from __future__ import annotations

LONG_PROMPT_TOKENS = 512

# The document of the 512-token prompt: numbered meeting notes (six texts, cycled), more than
# enough of them; the prompt cuts the document's ids where the whole reaches 512 tokens.
_NOTES = (
    "The city council met on Tuesday to review the budget for the new tram line, which is now "
    "expected to cost twelve percent more than planned because steel prices rose in the spring.",
    "Engineers reported that the tunnel under the river passed its pressure tests, although two "
    "pumps had to be replaced after water was found in a service shaft near the old harbour.",
    "A group of residents asked for quieter trains at night and for more bicycle parking at the "
    "stations; the transport office promised a survey of all nine stops before the winter.",
    "The finance committee proposed to pay for the extra cost with a bond rather than higher fares, "
    "and suggested that the timetable be published online in four languages.",
    "Local schools will take part in naming the stations, and the winning names will be announced "
    "at the opening ceremony planned for the first weekend of September next year.",
    "Several shop owners along the route said that construction had cut their sales by a third, and "
    "the council agreed to study a small compensation fund for the businesses most affected.",
)
LONG_PROMPT_REQUEST = "Summarize the following meeting notes in five bullet points.\n\n"
DOCUMENT = "\n\n".join(f"Note {i + 1}. {_NOTES[i % len(_NOTES)]} (Item {i + 1} of the minutes.)"
                       for i in range(3 * len(_NOTES)))
_SLOT = "<<DOCUMENT>>"  # where the document goes in the rendered template

# The seven requests that follow a benchmark's own conversation in ``batch8``: short chat
# requests of about the same length as the benchmarks' own, on different subjects, so the rows
# of the batch differ from the first token on.
BATCH_REQUESTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how the gears of a bicycle work.",
    "Describe a walk through a busy morning market.",
    "Write a letter inviting a friend to a picnic.",
    "Summarize the history of the printing press.",
    "Give some advice to someone learning to cook.",
    "Write a product description for a rain jacket.",
)
BATCH = 1 + len(BATCH_REQUESTS)


def _encode(model, text: str) -> list[int]:
    return model.tokenizer.encode(text, add_special_tokens=False).ids


def long_prompt_ids(model, tokens: int = LONG_PROMPT_TOKENS) -> list[int]:
    """Exactly ``tokens`` ids: the chat template around a user message that asks to summarize
    ``DOCUMENT``, the document's ids cut where the whole reaches the length. The template's text
    before and after the message is tokenized on its own, so the cut never touches it."""
    rendered = model.chat_prompt([{"role": "user", "content": LONG_PROMPT_REQUEST + _SLOT}])
    before, after = rendered.split(_SLOT)
    head, tail, body = _encode(model, before), _encode(model, after), _encode(model, DOCUMENT)
    room = tokens - len(head) - len(tail)
    if not 0 < room <= len(body):
        raise SystemExit(f"cannot build a {tokens}-token prompt "
                         f"(template {len(head) + len(tail)} tokens, document {len(body)})")
    return head + body[:room] + tail


def batch_messages(messages: list) -> list[list]:
    """The ``batch8`` conversations: the benchmark's own (``messages``, so that row 0 can be
    compared with the batch-1 run) and one per ``BATCH_REQUESTS``."""
    return [list(messages)] + [[{"role": "user", "content": r}] for r in BATCH_REQUESTS]


def batch_prompt_ids(model, messages: list) -> list[list[int]]:
    """Each ``batch_messages`` conversation rendered with the chat template and tokenized: eight
    rows of different lengths (a runtime pads them its own way)."""
    return [_encode(model, model.chat_prompt(m)) for m in batch_messages(messages)]
