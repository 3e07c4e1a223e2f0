"""The user-facing ``Model``: token-level parity API (``logits``, ``generate_ids``) and text API
(``generate``, ``stream``), all following transformers' names and semantics (see docs/API.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .generation import constraints, processors, prompt_lookup, scores, search
from .generation.languages import LanguageTokens
from .generation.options import GenerationOptions, resolve
from .text import TextAssembler, clean_up_tokenization, cut_at_stop


# Prompts per batch in the text API: large enough to keep the matrix kernels busy, small enough
# that padding and the KV cache stay modest.
DEFAULT_BATCH_SIZE = 32

# Copies of a step's logits that exist at once per row (the native output, its numpy array, the
# processed or beam-expanded scores, the beam candidates' score matrix): for sizing a request.
LOGIT_COPIES = 4
# Bytes per row and position beside the KV cache: the token ids beam search keeps (running and
# finished hypotheses and the candidates between them, int64) and the Python history of each row.
TOKEN_BYTES = 8 * 8


class Model:
    """A loaded model. Create it with ``fasttx.load(path)``.

    Limits (each a ``ValueError`` naming it, raised before anything of the request's size is
    allocated):

    - a prompt may hold at most ``max_positions`` tokens; on a model with learned positions
      (GPT-2) the prompt plus ``max_new_tokens`` too (rotary-position models generate past it when
      asked to, as in transformers); an encoder-decoder model with a bounded position table (BART,
      mBART, Marian) takes encoder inputs of at most ``max_positions`` tokens and at most
      ``max_positions`` new tokens;
    - the rows of a call (inputs x ``num_beams``, or x ``num_return_sequences`` when sampling) times
      the positions they may reach (prompt plus new tokens, up to ``max_positions``) must fit the
      machine's physical memory for their KV cache, token ids and logits;
    - sampling needs ``temperature`` of at least the smallest normal float32 (1.2e-38), and one
      that does not overflow the scores; beam search needs a finite ``length_penalty`` that keeps
      ``length ** length_penalty`` a finite, nonzero float32 over the budget.

    Memory then grows with the tokens produced, not with the budget; a native allocation that
    still fails is a ``MemoryError``. Non-finite logits (corrupt weights) raise
    ``fasttx.ModelFormatError`` naming the step.
    """

    def __init__(
        self,
        *,
        native,
        arch: str,
        config: dict,
        tokenizer,
        generation_config: dict,
        path: Path,
        chat_template: Optional[str] = None,
    ):
        self._native = native
        self.chat_template = chat_template
        self.arch = arch
        self.config = config
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.path = path
        self._clean_up_spaces = _tokenizer_setting(path, "clean_up_tokenization_spaces", False)
        self._languages: Optional[LanguageTokens] = None  # built on the first tgt_lang
        self._pieces: dict[int, str] = {}  # token id -> text piece (logprobs)
        self._constraints: Optional[constraints.ConstraintCompiler] = None  # built on the first constraint

    def __repr__(self) -> str:
        return f"fasttx.Model(arch={self.arch!r}, path={str(self.path)!r}, threads={self.threads})"

    @property
    def is_encoder_decoder(self) -> bool:
        return self._native.is_encoder_decoder

    @property
    def max_positions(self) -> Optional[int]:
        """The position limit that caps transformers' default length budget (the native model's
        ``max_position_embeddings``; ``None`` for T5's relative positions)."""
        return self._native.max_positions

    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    @property
    def threads(self) -> int:
        return self._native.threads

    # ------------------------------------------------------------------ token level

    def logits(self, input_ids, decoder_input_ids=None, attention_mask=None) -> np.ndarray:
        """float32 logits ``[batch, length, vocab]``, as ``hf_model(...).logits``."""
        ids, mask = _as_batch(input_ids, attention_mask, "input_ids", pad_left=False)
        if not self.is_encoder_decoder:
            if decoder_input_ids is not None:
                raise ValueError(f"{self.arch} is decoder-only: call logits(input_ids) without decoder_input_ids")
            self._check_prompt_length(ids.shape[1], "input_ids")
            # A plain transformers forward numbers positions 0..len-1 whatever the mask says.
            positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
            session = self._native.start(ids, mask)
            return session.step(ids, mask, positions, last_only=False)
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required for an encoder-decoder model (as in transformers)")
        dec, _ = _as_batch(decoder_input_ids, None, "decoder_input_ids", pad_left=False)
        if dec.shape[0] != ids.shape[0]:
            raise ValueError(
                f"decoder_input_ids has batch {dec.shape[0]} but input_ids has batch {ids.shape[0]}"
            )
        session = self._native.start(ids, mask)
        return session.step(dec, None, last_only=False)

    def generate_ids(self, input_ids, *, attention_mask=None, **options):
        """New tokens per returned sequence (``batch * num_return_sequences`` lists, in
        transformers' row order), each ending with EOS when generation stopped on EOS.

        With ``return_dict_in_generate=True``: a ``GenerateOutput`` (``sequences`` as above,
        ``finish_reasons``, and with ``output_scores`` / ``output_logits`` transformers' per-step
        ``scores`` / ``logits`` and, for beam search, ``sequences_scores``). Per-step arrays
        cover every row at every step, as transformers' do: finished rows then keep decoding the
        pad token until the whole batch ends (as in transformers), which only costs in that mode."""
        options, request = scores.split_output_options(options)
        opts = self._options(options)
        ids, mask = _as_batch(input_ids, attention_mask, "input_ids", pad_left=not self.is_encoder_decoder, pad_id=_pad_id(opts))
        if opts.constraint is not None:
            opts.constraint.check_prompts(ids.shape[0])
        if request is None:
            return self._generate(ids, mask, opts)
        record = scores.Recording.of(request)
        sequences = self._generate(ids, mask, opts, record=record)
        return record.output(sequences)

    # ------------------------------------------------------------------ text level

    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[bool] = None,
        **options,
    ):
        """Text in, text out. A list of prompts gives a list of texts (a list of lists with
        ``num_return_sequences > 1``), in input order.

        A long list runs in batches of ``batch_size`` prompts, sorted by length so that prompts of
        similar length share a batch (less padding); a prompt's result does not depend on its
        batch. ``progress``: a progress bar on stderr (tqdm); by default shown when there are
        several batches and stderr is a terminal. ``tgt_lang`` (translation models): the target
        language's token, forced as the first generated token (``__de__``, ``deu_Latn``,
        ``de_DE``, or the bare code), or put before the source for Marian's ``>>de<<``.
        ``logprobs=k``: each text comes as a ``fasttx.GeneratedText`` with its tokens'
        log-probabilities and the k best alternatives (the rule: generation/scores.py)."""
        return self._generate_text(
            prompts, options, add_special_tokens=True, batch_size=batch_size, progress=progress
        )

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Yields the text of ``generate(prompt, ...)`` in pieces as tokens arrive (beam search:
        once the best hypothesis is known). The pieces concatenate to ``generate``'s text."""
        return self._stream_text(prompt, options, add_special_tokens=True)

    def chat(self, messages: Sequence[dict], **options) -> str:
        """The assistant's reply to ``messages`` (``[{"role": ..., "content": ...}, ...]``), with the
        model's chat template applied and the generation prompt added, as transformers'
        ``apply_chat_template(..., add_generation_prompt=True)`` does."""
        # transformers tokenizes a rendered template without adding special tokens again.
        return self._generate_text(self.chat_prompt(messages), options, add_special_tokens=False)

    def stream_chat(self, messages: Sequence[dict], **options) -> Iterator[str]:
        """``chat``, streamed as ``stream`` does."""
        return self._stream_text(self.chat_prompt(messages), options, add_special_tokens=False)

    def chat_prompt(self, messages: Sequence[dict]) -> str:
        """The chat template rendered for ``messages`` with the generation prompt."""
        from .chat import render_chat

        if not self.chat_template:
            raise ValueError(f"{self.path} has no chat template (tokenizer.chat_template / tokenizer_config.json)")
        return render_chat(
            self.chat_template,
            list(messages),
            add_generation_prompt=True,
            template_source=str(self._chat_template_file()),
            **self._special_token_strings(),
        )

    def _chat_template_file(self) -> Path:
        """The file the chat template came from, for error messages (as fasttx.load looks for it)."""
        if self.path.is_file():  # a .gguf
            return self.path
        jinja = self.path / "chat_template.jinja"
        return jinja if jinja.is_file() else self.path / "tokenizer_config.json"

    def _special_token_strings(self) -> dict:
        tok = self._require_tokenizer()
        out = {}
        for name in ("bos", "eos", "pad", "unk"):
            tid = self.generation_config.get(f"{name}_token_id", self.config.get(f"{name}_token_id"))
            if isinstance(tid, list):
                tid = tid[0] if tid else None
            if isinstance(tid, int):
                text = tok.id_to_token(tid)
                if text is not None:
                    out[f"{name}_token"] = text
        return out

    # ------------------------------------------------------------------ internals

    def _generate_text(
        self,
        prompts,
        options: dict,
        *,
        add_special_tokens: bool,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[bool] = None,
    ):
        single = isinstance(prompts, str)
        prompt_list = [prompts] if single else list(prompts)
        if not all(isinstance(p, str) for p in prompt_list):
            raise ValueError("prompts must be a string or a list of strings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        options, logprobs = self._text_options(options)
        options, source_prefix = self._target_language(options)
        opts = self._options(options)
        if opts.constraint is not None:
            opts.constraint.check_prompts(len(prompt_list))
        if logprobs is not None and opts.num_beams > 1:
            raise ValueError(
                "logprobs needs greedy search or sampling (num_beams=1); for beam search use "
                "generate_ids(..., return_dict_in_generate=True, output_scores=True)"
            )
        encoded = [source_prefix + e for e in self._encode(prompt_list, add_special_tokens)]
        # Longest first (stable): similar lengths share a batch, and the slowest batch comes first,
        # so the progress bar's estimate errs on the safe side.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        occurrence = occurrence_indices([tuple(e) for e in encoded])
        n = opts.num_return_sequences
        results: list[Any] = [None] * len(encoded)
        with _progress_bar(len(encoded), batch_size, progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                ids, mask = _as_batch(
                    [encoded[i] for i in batch],
                    None,
                    "prompts",
                    pad_left=not self.is_encoder_decoder,
                    pad_id=_pad_id(opts),
                )
                record = scores.Recording(logprobs_k=logprobs) if logprobs is not None else None
                seqs = self._generate(ids, mask, opts, [occurrence[i] for i in batch], record, inputs=batch)
                texts: list[Any] = [cut_at_stop(self._decode(s), opts.stop) for s in seqs]
                if record is not None:
                    texts = [self._with_logprobs(t, s, r, record) for r, (t, s) in enumerate(zip(texts, seqs))]
                for j, i in enumerate(batch):
                    results[i] = texts[j] if n == 1 else texts[j * n : (j + 1) * n]
                bar.update(len(batch))
        return results[0] if single else results

    def _text_options(self, options: dict) -> tuple[dict, Optional[int]]:
        """The text API's options without ``logprobs`` (checked), and ``logprobs``."""
        given = [k for k in scores.OUTPUT_KEYS if k in options]
        if given:
            raise ValueError(
                f"{given[0]} is an option of generate_ids (token level); the text API reports scores "
                "with logprobs=k"
            )
        options = dict(options)
        return options, scores.check_logprobs(options.pop("logprobs", None), self.vocab_size)

    def _with_logprobs(self, text: str, tokens: list[int], row: int, record: scores.Recording) -> scores.GeneratedText:
        """``generate``'s ``text`` of a row with the token log-probabilities ``record`` kept for it."""
        per_token = record.token_logprobs.get(row, [])
        return scores.GeneratedText(
            text=text,
            tokens=[self._piece(t) for t in tokens],
            token_ids=list(tokens),
            logprobs=[lp for lp, _, _ in per_token],
            top_logprobs=[self._top_dict(ids, values) for _, values, ids in per_token],
            finish_reason=record.finish_reasons[row],
        )

    def _top_dict(self, ids: np.ndarray, values: np.ndarray) -> dict[str, float]:
        """``{piece: logprob}`` of the k best tokens, best first; tokens that share a piece (byte
        fragments all read "\ufffd") keep the best one's logprob."""
        top: dict[str, float] = {}
        for t, v in zip(ids.tolist(), values.tolist()):
            top.setdefault(self._piece(t), v)
        return top

    def _piece(self, token: int) -> str:
        """A token as text on its own (special tokens spelled out; "" without a tokenizer), cached."""
        piece = self._pieces.get(token)
        if piece is None:
            tok = self.tokenizer
            piece = tok.decode([token], skip_special_tokens=False) if tok is not None else ""
            self._pieces[token] = piece
        return piece

    def _stream_text(self, prompt: str, options: dict, *, add_special_tokens: bool) -> Iterator[str]:
        if not isinstance(prompt, str):
            raise ValueError("stream takes one prompt string")
        if "logprobs" in options:
            raise ValueError(
                "stream yields text pieces only; for log-probabilities use generate(..., logprobs=k) "
                "or chat(..., logprobs=k) (the server streams them with its OpenAI API)"
            )
        options, _ = self._text_options(options)
        options, source_prefix = self._target_language(options)
        opts = self._options(options)
        if opts.num_return_sequences != 1:
            raise ValueError("stream returns one sequence: num_return_sequences must be 1")
        if opts.constraint is not None:
            opts.constraint.check_prompts(1)
        encoded = [source_prefix + self._encode([prompt], add_special_tokens)[0]]
        ids, mask = _as_batch(encoded, None, "prompt", pad_left=False)

        def pieces() -> Iterator[str]:
            if opts.num_beams > 1:  # the best hypothesis is known only at the end
                text = cut_at_stop(self._decode(self._generate(ids, mask, opts)[0]), opts.stop)
                if text:
                    yield text
                return
            assembler = TextAssembler(self._decode, opts.stop)
            _, events = self._start_sampling(ids, mask, opts)
            for event in events:
                assembler.extend(event.tokens)
                piece = assembler.take(final=False)
                if piece:
                    yield piece
                if event.finished or assembler.stopped:
                    break
            tail = assembler.take(final=True)
            if tail:
                yield tail

        return pieces()

    def _target_language(self, options: dict) -> tuple[dict, list[int]]:
        """The text API's ``tgt_lang``: ``options`` with the language token as
        ``forced_bos_token_id`` (mBART, M2M100, NLLB), or the token ids to put before each source
        (Marian's ``>>xx<<``, which selects the language from the source)."""
        if options.get("tgt_lang") is None:
            return {k: v for k, v in options.items() if k != "tgt_lang"}, []
        options = dict(options)
        code = options.pop("tgt_lang")
        if not self.is_encoder_decoder:
            raise ValueError(f"tgt_lang is for translation (encoder-decoder) models; {self.arch} is decoder-only")
        if self._languages is None:
            self._languages = LanguageTokens(self._require_tokenizer())
        lang = self._languages.lookup(code)
        if lang.in_source:
            return options, [lang.id]
        given = options.get("forced_bos_token_id")
        if given is not None and given != lang.id:
            raise ValueError(
                f"tgt_lang={code!r} (token {lang.token!r}, id {lang.id}) contradicts "
                f"forced_bos_token_id={given!r}: pass one of them"
            )
        options["forced_bos_token_id"] = lang.id
        return options, []

    def _options(self, options: dict) -> GenerationOptions:
        opts = resolve(options, self.generation_config, self.vocab_size)
        prompt_lookup.check_options(opts)
        if opts.constraint is not None:
            if self._constraints is None:
                self._constraints = constraints.ConstraintCompiler(self._require_tokenizer(), self.vocab_size)
            self._constraints.compile(opts.constraint, opts.eos_token_id)
        return opts

    def _row_constraints(
        self, opts: GenerationOptions, inputs: Sequence[int], copies: int
    ) -> Optional[constraints.RowConstraints]:
        """The constraint state of a generation's rows (``copies`` per input; ``inputs``: the
        inputs' indices in the call), or None for an unconstrained call. Beam search's is not
        strict: a beam left without continuation just drops out."""
        if opts.constraint is None:
            return None
        compiled = opts.constraint.for_inputs(inputs, copies)
        forced = [opts.forced_bos_token_id] if opts.forced_bos_token_id is not None else []
        forced += opts.forced_eos_token_id or []
        return constraints.RowConstraints(compiled, self._native, strict=opts.num_beams == 1, passthrough=forced)

    def _encode(self, prompts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        tok = self._require_tokenizer()
        if not prompts:
            raise ValueError("empty batch: at least one prompt is needed")
        return [e.ids for e in tok.encode_batch(prompts, add_special_tokens=add_special_tokens)]

    def _decode(self, ids: Sequence[int]) -> str:
        text = self._require_tokenizer().decode(list(ids), skip_special_tokens=True)
        return clean_up_tokenization(text) if self._clean_up_spaces else text

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"{self.path} has no tokenizer.json: use the token-level API (generate_ids)")
        return self.tokenizer

    def _decoder_prompt(self, ids: np.ndarray, mask: np.ndarray, opts: GenerationOptions, copies: int) -> search.Prompt:
        """The decoder-side prompt as transformers sees it, for ``ids.shape[0] * copies`` rows: the
        decoder start token for encoder-decoder models, the (left-padded) prompt for decoder-only."""
        rows = ids.shape[0]
        if self.is_encoder_decoder:
            start = opts.decoder_start_token_id
            if start is None:
                start = opts.bos_token_id
            if start is None:
                raise ValueError(
                    "`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation"
                )
            first, first_mask = np.full((rows, 1), start, dtype=np.int64), None
        else:
            first, first_mask = ids, mask
        return search.Prompt(
            history=[first[i].tolist() for i in range(rows) for _ in range(copies)],
            first_tokens=first,
            first_mask=first_mask,
            prompt_len=first.shape[1],
            copies=copies,
        )

    def _check_prompt_length(self, tokens: int, what: str) -> None:
        """Refuses a (decoder) prompt longer than the model's positions, before any work."""
        limit = self.max_positions
        if limit is not None and tokens > limit:
            raise ValueError(
                f"{what} of {tokens} tokens is longer than the {limit} positions this model has "
                "(max_position_embeddings): shorten the prompt"
            )

    def _open_session(
        self, ids: np.ndarray, mask: np.ndarray, opts: GenerationOptions, copies: int, recorded: int = 0
    ):
        """A session over the prompt batch, the decoder prompt for ``copies`` rows per input and the
        new-token budget, once the request is known to fit the model and the machine (``recorded``:
        per-step arrays kept per row, for ``return_dict_in_generate``). Every check runs before
        anything of the request's size is allocated."""
        prompt_len = 1 if self.is_encoder_decoder else ids.shape[1]
        budget = self._checked_budget(ids, mask, opts)
        session = self._native.start(ids, mask)
        self._check_memory(session, ids.shape[0], copies, prompt_len, budget, opts, recorded)
        # The cache's room for every position the request may reach, at once: it then never grows
        # by copying (and doubling) mid-generation; untouched room costs no memory.
        session.reserve(self._reachable_positions(prompt_len, budget))
        prompt = self._decoder_prompt(ids, mask, opts, copies)
        return session, prompt, budget

    def _checked_budget(self, ids: np.ndarray, mask: np.ndarray, opts: GenerationOptions) -> int:
        """The new-token budget of a request, once its prompt and budget are known to fit the
        model's positions (the serving engine checks a request with it before queuing it)."""
        prompt_len = 1 if self.is_encoder_decoder else ids.shape[1]
        budget = opts.new_token_budget(prompt_len, self.max_positions)
        if not self.is_encoder_decoder:
            longest = int(mask.sum(axis=1).max())  # real tokens: padding takes no position
            self._check_prompt_length(longest, "the prompt")
            limit = self.max_positions
            if self._native.max_positions_is_hard and limit is not None and longest + budget > limit:
                raise ValueError(
                    f"the prompt's {longest} tokens plus {budget} new tokens exceed the {limit} positions "
                    "this model has (learned position embeddings end there): lower max_new_tokens "
                    f"to at most {limit - longest}"
                )
        elif self._native.max_positions_is_hard and self.max_positions is not None:
            self._check_encoder_decoder_positions(ids.shape[1], budget)
        return budget

    def _check_encoder_decoder_positions(self, width: int, budget: int) -> None:
        """Refuses a request that would pass a bounded position table (BART and mBART learn
        theirs, Marian's sinusoids are a fixed table): an encoder input wider than the table
        (padding included: these models number the padded columns too), or a new-token budget
        whose decoder steps would read past it. The decoder reads positions 0..budget-1: the start
        token, then each new token but the last (never fed back), as in transformers, which stops
        with an IndexError mid-generation where this refuses up front."""
        limit = self.max_positions
        if width > limit:
            raise ValueError(
                f"the encoder input of {width} tokens is longer than the {limit} positions this model "
                "has (max_position_embeddings): shorten the input"
            )
        if budget > limit:
            raise ValueError(
                f"{budget} new tokens would take the decoder past the {limit} positions this model has "
                f"(max_position_embeddings; learned or fixed position tables end there): lower "
                f"max_new_tokens (or max_length) to at most {limit}"
            )

    def _reachable_positions(self, prompt_len: int, budget: int) -> int:
        """Decoder positions a request may fill: its prompt and budget, up to the model's positions."""
        positions = prompt_len + budget
        if self.max_positions is not None:
            positions = min(positions, max(self.max_positions, prompt_len + 1))
        return positions

    def _check_memory(
        self, session, inputs: int, copies: int, prompt_len: int, budget: int, opts, recorded: int = 0
    ) -> None:
        """Refuses a request whose rows (inputs x beams or sequences) need more memory for their KV
        cache and logits (and the ``recorded`` per-step score arrays) than the machine has, were it
        to run to its budget (up to the model's positions): a ValueError now instead of an
        allocation failure later."""
        machine = _physical_memory()
        if machine is None:
            return
        positions = self._reachable_positions(prompt_len, budget)
        rows = inputs * copies
        # Prompt lookup's steps return the logits of every draft position too.
        logit_rows = LOGIT_COPIES + (opts.prompt_lookup_num_tokens or 0)
        per_row = positions * (session.cache_bytes_per_position + TOKEN_BYTES) + logit_rows * self.vocab_size * 4
        per_row += recorded * budget * self.vocab_size * 4  # one float32 row per step and array
        needed = rows * per_row
        if needed > machine:
            what = "beams" if opts.num_beams > 1 else "sequences"
            kept = " (and the per-step scores asked for)" if recorded else ""
            raise ValueError(
                f"{rows} rows ({inputs} inputs x {copies} {what}) of up to {positions} positions need "
                f"about {needed / 2**30:.3g} GiB for the KV cache and logits{kept}, more than this machine's "
                f"{machine / 2**30:.3g} GiB of memory: use fewer beams, return sequences or inputs per "
                "batch, or fewer new tokens"
            )

    def _stop_hit(self, opts: GenerationOptions):
        """``stop_hit(new_tokens)``: whether the text of these new tokens holds a stop string
        (None without stop strings)."""
        if not opts.stop:
            return None
        self._require_tokenizer()

        def stop_hit(new_tokens: list[int]) -> bool:
            text = self._decode(new_tokens)
            return any(s in text for s in opts.stop)

        return stop_hit

    def _stopper(self, prompt: search.Prompt, opts: GenerationOptions):
        """``is_stopped(row, token)`` for stop strings, or None."""
        stop_hit = self._stop_hit(opts)
        if stop_hit is None:
            return None
        p0 = prompt.prompt_len
        return lambda row, token: stop_hit(prompt.history[row][p0:])

    def _start_sampling(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        opts: GenerationOptions,
        occurrence: Optional[list[int]] = None,
        *,
        keep_finished: bool = False,
        keep_logits: bool = False,
        recorded: int = 0,
        inputs: Optional[Sequence[int]] = None,
    ):
        """Greedy or sampling over a fresh session: the decoder prompt (whose ``history`` fills up
        as tokens are chosen) and the iterator of per-step events that drives it. Prompt lookup
        (a speed option: the tokens are plain decoding's) is left out when finished rows must stay
        in the batch or raw logits are kept (``search.RowDecisions``). ``inputs[row]``: the row's
        prompt index in the call (per-prompt constraints); by default the row's index."""
        n = opts.num_return_sequences
        session, prompt, budget = self._open_session(ids, mask, opts, copies=n, recorded=recorded)
        sampler = _row_sampler(ids, mask, opts, occurrence, n) if opts.do_sample else None
        stopper = self._stopper(prompt, opts)
        rows = self._row_constraints(opts, _inputs(inputs, ids), n)
        if opts.prompt_lookup_num_tokens is not None and not (keep_finished or keep_logits):
            events = prompt_lookup.decode(self._native, session, prompt, opts, budget, sampler, stopper, rows)
        else:
            events = search.sample_or_greedy(
                self._native, session, prompt, opts, budget, sampler, stopper,
                keep_finished=keep_finished, keep_logits=keep_logits, constraints=rows,
            )
        return prompt, events

    def _generate(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        opts: GenerationOptions,
        occurrence: Optional[list[int]] = None,
        record: Optional[scores.Recording] = None,
        inputs: Optional[Sequence[int]] = None,
    ) -> list[list[int]]:
        """New tokens per returned sequence. ``occurrence[row]``: which occurrence of its prompt the row
        is within the whole call (sampling draws differ per occurrence); by default counted in
        this batch. ``record``: what to keep beside the tokens (scores, logits, logprobs; finish
        reasons are filled in). ``inputs[row]``: the row's prompt index in the call (per-prompt
        constraints); by default the row's index."""
        recorded = 0 if record is None else (record.scores is not None) + (record.logits is not None)
        if opts.num_beams > 1:
            session, prompt, budget = self._open_session(ids, mask, opts, copies=opts.num_beams, recorded=recorded)
            # Beam sampling: one random stream per input.
            sampler = _row_sampler(ids, mask, opts, occurrence, 1) if opts.do_sample else None
            rows = self._row_constraints(opts, _inputs(inputs, ids), opts.num_beams)
            return search.beam_search(
                self._native, session, prompt, opts, budget, self._stop_hit(opts), sampler, record, rows
            )
        # Custom processors see every row at every step (row i is always sequence i), as
        # transformers' per-step arrays do.
        keep_finished = bool(opts.logits_processor) or (record is not None and record.keeps_all_rows)
        keep_logits = record is not None and record.logits is not None
        prompt, events = self._start_sampling(
            ids, mask, opts, occurrence, keep_finished=keep_finished, keep_logits=keep_logits, recorded=recorded,
            inputs=inputs,
        )
        p0 = prompt.prompt_len
        ends: dict[int, int] = {}  # row -> its history's length when it finished
        for step, event in enumerate(events):
            if record is not None:
                self._record_step(record, event, opts, ends)
            for r in event.finished:
                ends[r] = p0 + step + 1
        if record is not None:
            record.finish_reasons = ["stop" if r in ends else "length" for r in range(len(prompt.history))]
        return [h[p0 : ends.get(r, len(h))] for r, h in enumerate(prompt.history)]

    def _record_step(self, record: scores.Recording, event: search.StepEvent, opts: GenerationOptions, ends: dict) -> None:
        """Keeps what ``record`` asks for of one greedy/sampling step (``ends``: the rows finished
        at earlier steps, which choose nothing)."""
        assert event.scores is not None
        if record.scores is not None:
            chosen_from = np.ascontiguousarray(event.scores, dtype=np.float32)
            if opts.do_sample:  # transformers' scores include the warpers (its processor list does)
                chosen_from = self._native.warp_rows(chosen_from, *processors.warpers(opts, beam=False))
            record.scores.append(chosen_from)
        if record.logits is not None and event.logits is not None:
            record.logits.append(event.logits)
        if record.logprobs_k is not None:
            live = [i for i, r in enumerate(event.rows) if r not in ends]
            rows_scores = event.scores if len(live) == len(event.rows) else event.scores[live]
            tokens = [event.tokens[i] for i in live]
            temperature = opts.temperature if opts.do_sample else None
            chosen, values, top_ids = scores.token_logprobs(self._native, rows_scores, tokens, record.logprobs_k, temperature)
            for j, i in enumerate(live):
                record.token_logprobs.setdefault(event.rows[i], []).append((float(chosen[j]), values[j], top_ids[j]))


def _inputs(inputs: Optional[Sequence[int]], ids: np.ndarray) -> Sequence[int]:
    """The call-wide prompt index of each row of the batch ``ids`` (default: its row index)."""
    return inputs if inputs is not None else range(ids.shape[0])


def _physical_memory() -> Optional[int]:
    """Bytes of physical memory (None where the OS does not say)."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _row_sampler(ids: np.ndarray, mask: np.ndarray, opts: GenerationOptions, occurrence, streams: int):
    """``streams`` random streams per input row. A stream depends on the seed, its prompt, which
    occurrence of that prompt it is in the call (``occurrence``, else counted in this batch: the
    same prompt twice gives two samples) and its index among the row's streams, never on the
    other prompts of the batch."""
    real = [tuple(ids[i][mask[i] != 0].tolist()) for i in range(ids.shape[0])]
    copy = occurrence if occurrence is not None else occurrence_indices(real)
    prompts = [p for p in real for _ in range(streams)]
    index = [c * streams + j for c in copy for j in range(streams)]
    return search.RowSampler(opts.seed, prompts, index)


def occurrence_indices(prompts: Sequence[tuple]) -> list[int]:
    """For each prompt, how many equal prompts precede it (0 for the first occurrence)."""
    seen: dict = {}
    out = []
    for p in prompts:
        out.append(seen.get(p, 0))
        seen[p] = out[-1] + 1
    return out


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(total: int, batch_size: int, progress: Optional[bool]):
    """A tqdm bar over ``total`` prompts, or a no-op: ``progress=None`` shows it when the work
    spans several batches and stderr is a terminal."""
    import sys

    if progress is None:
        progress = total > batch_size and sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", desc="fasttx generate", file=sys.stderr)


def _tokenizer_setting(path: Path, key: str, default):
    import json

    cfg = path / "tokenizer_config.json"
    if not cfg.is_file():
        return default
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get(key, default)
    except (OSError, ValueError):
        return default


def _pad_id(opts: GenerationOptions) -> int:
    """The id transformers users pad prompts with (it shows up in ``input_ids``, e.g. to
    ``repetition_penalty``): the pad token, else the first EOS token."""
    if opts.pad_token_id is not None:
        return opts.pad_token_id
    return opts.eos_token_id[0] if opts.eos_token_id else 0


def _as_batch(input_ids, attention_mask, what: str, *, pad_left: bool, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rectangular int64 batch and its mask, from a 2-D array or a (ragged) list of lists."""
    if isinstance(input_ids, np.ndarray):
        if input_ids.ndim != 2:
            raise ValueError(f"{what} must be 2-D [batch, length], got shape {input_ids.shape}")
        if input_ids.dtype.kind not in "iu":
            raise ValueError(f"{what} must hold integers, got dtype {input_ids.dtype}")
        ids = input_ids.astype(np.int64, copy=False)
        if ids.shape[0] == 0:
            raise ValueError(f"empty batch: {what} holds no sequence")
        if ids.shape[1] == 0:
            raise ValueError(f"{what} sequences are empty")
        if attention_mask is None:
            mask = np.ones_like(ids)
        else:
            mask = np.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {mask.shape}, but {what} has shape {ids.shape}")
            mask = (mask != 0).astype(np.int64)
            if not mask.any(axis=1).all():
                raise ValueError(f"attention_mask masks out every token of some {what} row")
        if (ids < 0).any():
            raise ValueError(f"{what} holds a negative token id")
        return np.ascontiguousarray(ids), np.ascontiguousarray(mask)

    if not isinstance(input_ids, (list, tuple)):
        raise ValueError(f"{what} must be a list of token-id lists or a 2-D numpy array, got {type(input_ids).__name__}")
    if len(input_ids) == 0:
        raise ValueError(f"empty batch: {what} holds no sequence")
    rows = []
    for i, seq in enumerate(input_ids):
        if isinstance(seq, np.ndarray):
            seq = seq.tolist()
        if not isinstance(seq, (list, tuple)):
            raise ValueError(f"{what}[{i}] must be a list of token ids (did you pass a flat list? wrap it: [ids])")
        if len(seq) == 0:
            raise ValueError(f"{what}[{i}] is empty")
        for t in seq:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise ValueError(f"{what}[{i}] holds {t!r}, which is not a token id")
            if t < 0:
                raise ValueError(f"{what}[{i}] holds a negative token id {t}")
        rows.append(list(seq))
    if attention_mask is not None:
        if len({len(r) for r in rows}) != 1:
            raise ValueError("attention_mask needs rectangular input_ids; ragged lists are padded by fasttx without one")
        return _as_batch(np.asarray(rows, dtype=np.int64), attention_mask, what, pad_left=pad_left)
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if pad_left:
            ids[i, width - len(r) :] = r
            mask[i, width - len(r) :] = 1
        else:
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
    return ids, mask
