"""Stop strings and incremental text assembly (pure Python, no model needed)."""

from fasttx.text import TextAssembler, clean_up_tokenization, cut_at_stop

# A toy byte-level vocabulary: token i decodes to PIECES[i]; "é" is split over two byte tokens.
PIECES = [b"Hello", b" wor", b"ld", b" \xc3", b"\xa9t\xc3\xa9", b" ##", b"#", b" end"]


def decode(ids):
    return b"".join(PIECES[i] for i in ids).decode("utf-8", errors="replace")


def run(tokens, stops=()):
    asm = TextAssembler(decode, stops)
    pieces = []
    for t in tokens:
        asm.extend([t])
        piece = asm.take(final=False)
        if piece:
            pieces.append(piece)
        if asm.stopped:
            break
    pieces.append(asm.take(final=True))
    return [p for p in pieces if p]


def test_pieces_concatenate_to_full_text_and_never_split_characters():
    tokens = [0, 1, 2, 3, 4, 7]
    pieces = run(tokens)
    assert "".join(pieces) == decode(tokens)
    assert all("\ufffd" not in p for p in pieces)


def test_words_are_not_emitted_half_done():
    pieces = run([0, 1, 2, 7])
    assert " wor" not in pieces  # "wor" is only shown once "ld" completed the word


def test_stop_string_spanning_tokens_is_cut():
    tokens = [0, 1, 2, 5, 6, 7]
    assert "".join(run(tokens, ["###"])) == "Hello world "
    assert cut_at_stop(decode(tokens), ["###"]) == "Hello world "


def test_earliest_stop_string_wins():
    assert cut_at_stop("a STOP b END", ["END", "STOP"]) == "a "


def test_clean_up_tokenization_matches_transformers_rules():
    assert clean_up_tokenization("Hello , world ! It 's done .") == "Hello, world! It's done."
