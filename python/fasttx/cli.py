"""``fasttx`` command line: ``generate``, ``chat``, ``serve`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation options (transformers' GenerationConfig names)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--min-new-tokens", type=int)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--length-penalty", type=float)
    g.add_argument("--early-stopping", choices=["true", "false", "never"])
    g.add_argument("--num-return-sequences", type=int)
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--min-p", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--eos-token-id", type=int, action="append")
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument(
        "--prompt-lookup-num-tokens", type=int,
        help="prompt-lookup decoding: draft tokens copied from the text's earlier n-grams per step (same output)",
    )  # fmt: skip
    g.add_argument("--max-matching-ngram-size", type=int, help="prompt lookup: longest n-gram matched (default 2)")
    g.add_argument("--tgt-lang", help='translation models: target language code ("de", "de_DE", "deu_Latn", ...)')
    c = p.add_argument_group("constrained output (at most one)")
    c.add_argument("--json-schema", metavar="FILE_OR_JSON", help="output JSON that validates against this schema")
    c.add_argument("--regex", help="output that fully matches this regular expression")
    c.add_argument("--choices", metavar="A,B,...", help="output exactly one of these comma-separated strings")
    c.add_argument("--grammar", metavar="FILE", help="output in the language of this Lark grammar")


_OPTION_NAMES = [
    "max_new_tokens", "min_new_tokens", "num_beams", "length_penalty", "early_stopping",
    "num_return_sequences", "do_sample", "temperature", "top_k", "top_p", "min_p", "seed",
    "repetition_penalty", "no_repeat_ngram_size", "eos_token_id", "stop", "tgt_lang",
    "prompt_lookup_num_tokens", "max_matching_ngram_size",
]  # fmt: skip


def _options(args: argparse.Namespace) -> dict:
    opts = {k: getattr(args, k) for k in _OPTION_NAMES if getattr(args, k) is not None}
    if "early_stopping" in opts:
        opts["early_stopping"] = {"true": True, "false": False}.get(opts["early_stopping"], "never")
    if args.json_schema is not None:
        opts["json_schema"] = _file_or_text(args.json_schema)
    if args.regex is not None:
        opts["regex"] = args.regex
    if args.choices is not None:
        opts["choices"] = args.choices.split(",")
    if args.grammar is not None:
        opts["grammar"] = _file_or_text(args.grammar)
    return opts


def _file_or_text(value: str) -> str:
    """The contents of the file ``value`` names, else ``value`` itself (inline JSON or grammar)."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


def _model_path(args: argparse.Namespace) -> str:
    """--model, else $FASTTX_MODEL, else the default instruction model (fetched once, with progress)."""
    path = args.model or os.environ.get("FASTTX_MODEL")
    if path:
        return path
    from .hub import default_model_path

    return str(default_model_path(progress=True))


def _load(args: argparse.Namespace):
    import fasttx

    return fasttx.load(_model_path(args), dtype=args.dtype, threads=args.threads)


def _write_stream(pieces) -> None:
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def read_prompts(path: str) -> list[str]:
    """Prompts from a file: JSON Lines (each line an object with a ``"prompt"`` string, or a JSON
    string) when the file is ``.jsonl`` or its first non-empty line starts with ``{``; otherwise one
    prompt per non-empty line. ``-`` reads standard input."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    jsonl = path.endswith(".jsonl") or first.lstrip().startswith("{")
    prompts = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not valid JSON ({e.msg})") from None
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str):
            raise ValueError(f'{path}:{no}: expected {{"prompt": "..."}} or a JSON string')
        prompts.append(item)
    if not prompts:
        raise ValueError(f"{path} holds no prompt")
    return prompts


def cmd_generate_file(args: argparse.Namespace) -> int:
    """``--input FILE``: every prompt of the file, in batches, one JSON line per prompt out."""
    prompts = read_prompts(args.input)
    model = _load(args)
    opts = _options(args)
    use_chat = model.chat_template is not None and not args.raw
    texts = [model.chat_prompt([{"role": "user", "content": p}]) for p in prompts] if use_chat else prompts
    outputs = model._generate_text(
        texts,
        opts,
        add_special_tokens=not use_chat,
        batch_size=args.batch_size,
        progress=None if args.progress is None else args.progress == "on",
    )
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for prompt, output in zip(prompts, outputs):
            out.write(json.dumps({"prompt": prompt, "output": output}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    if args.input is not None:
        if args.prompt is not None:
            raise ValueError("give either a prompt or --input FILE, not both")
        return cmd_generate_file(args)
    if args.prompt is None:
        raise ValueError("nothing to generate from: give a prompt or --input FILE")
    model = _load(args)
    opts = _options(args)
    # An instruction-tuned model gets its chat template, as `fasttx chat` and model.chat do.
    use_chat = model.chat_template is not None and not args.raw
    messages = [{"role": "user", "content": args.prompt}]
    if opts.get("num_return_sequences", 1) > 1 or args.no_stream:
        out = model.chat(messages, **opts) if use_chat else model.generate(args.prompt, **opts)
        for text in out if isinstance(out, list) else [out]:
            print(text)
        return 0
    _write_stream(model.stream_chat(messages, **opts) if use_chat else model.stream(args.prompt, **opts))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    model = _load(args)
    if model.chat_template is None:
        raise SystemExit(f"fasttx: {model.path} has no chat template, so it cannot chat")
    messages: list = []
    opts = _options(args)
    while True:
        try:
            line = input("> ")
        except EOFError:
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        messages.append({"role": "user", "content": line})
        pieces = []
        for piece in model.stream_chat(messages, **opts):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(pieces)})


def cmd_serve(args: argparse.Namespace) -> int:
    """The OpenAI-compatible server (the ``serve`` extra: FastAPI and uvicorn, imported only here)."""
    try:
        import fasttx.serve as serve

        serve._require_extras()
    except ImportError as e:
        print(f"fasttx: error: {e}", file=sys.stderr)
        return 2
    serve.run(
        _model_path(args),
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        api_key=args.api_key if args.api_key is not None else os.environ.get("FASTTX_API_KEY"),
        threads=args.threads,
        dtype=args.dtype,
        model_id=args.served_model_name,
        log_level=args.log_level,
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fasttx", description="Fast transformer text generation on CPU.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="model directory or .gguf file (default: $FASTTX_MODEL, else SmolLM2-135M-Instruct)")
        p.add_argument("--dtype", default="auto", choices=["auto", "f32", "int8"])
        p.add_argument("--threads", type=int, help="compute threads (default: physical cores)")
        _add_generation_options(p)

    g = sub.add_parser("generate", help="generate text for an instruction, or for every prompt of a file")
    common(g)
    g.add_argument("--no-stream", action="store_true", help="print the whole answer at the end")
    g.add_argument("--raw", action="store_true", help="feed the text as is, without the model's chat template")
    g.add_argument(
        "--input",
        metavar="FILE",
        help="prompts from FILE ('-' = stdin): one per line, or JSON Lines with a \"prompt\" key; "
        "writes one JSON line per prompt",
    )
    g.add_argument("--output", metavar="FILE", help="with --input: write the JSON lines to FILE (default: stdout)")
    g.add_argument("--batch-size", type=int, default=32, help="with --input: prompts per batch (default 32)")
    g.add_argument(
        "--progress", choices=["on", "off"], help="with --input: progress bar on stderr (default: when a terminal)"
    )
    g.add_argument("prompt", nargs="?")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="interactive chat")
    common(c)
    c.set_defaults(func=cmd_chat)

    from .serve import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server with continuous batching (pip install \"fasttx[serve]\")")
    s.add_argument("--model", help="model directory or .gguf file (default: $FASTTX_MODEL, else SmolLM2-135M-Instruct)")
    s.add_argument("--dtype", default="auto", choices=["auto", "f32", "int8"])
    s.add_argument("--threads", type=int, help="compute threads (default: physical cores)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH,
        help=f"sequences decoded at once (default {DEFAULT_MAX_BATCH})",
    )  # fmt: skip
    s.add_argument(
        "--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
        help=f"requests waiting for a slot before new ones get 503 (default {DEFAULT_MAX_QUEUE})",
    )  # fmt: skip
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes (default: $FASTTX_API_KEY, else none)")
    s.add_argument("--served-model-name", help="the model id clients see (default: the model's file name)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench", help="benchmarks against reference runtimes: fasttx bench {t5,smollm2,qwen2.5-coder,all} (see BENCHMARKS.md)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to fasttx.bench's own parser (its --help included).
        from . import bench

        try:
            return bench.main(argv[1:])
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"fasttx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
