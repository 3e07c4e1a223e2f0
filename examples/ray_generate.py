"""Generate text for a file of prompts on a Ray cluster (or this machine) with fasttx.ray.Generator.

Input: JSON lines (.jsonl / .json) or Parquet (a .parquet file or a directory of them) with a
column "prompt" (text, passed to the model as it is) or "messages" (a chat: a list of
{"role", "content"} objects, put through the model's chat template). Output: a directory of Parquet
files, or of JSON-lines files when its name ends in .jsonl, holding every input column and
"output", the generated text.

    pip install "fasttx[ray]"
    python examples/ray_generate.py prompts.jsonl results.parquet --max-new-tokens 64 \\
        --concurrency 2 --num-cpus-per-actor 1 --batch-size 32

Each of the --concurrency actors loads the model once and computes with --num-cpus-per-actor
threads, so concurrency x num-cpus-per-actor should be the CPUs the job may use. Outputs do not
depend on how rows are split into batches or actors: each is what `model.generate(prompt)` (or
`model.chat(messages)`) gives alone.

On a multi-node cluster (README.md, "Batch jobs on Ray Data"): run it on the head node with
--address auto, or send it with `ray job submit`; the model path, the input and the output must be
reachable from every node (same path on each, or shared storage such as s3://... for the data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ray

import fasttx.ray


# Reading and writing files is light next to generation, and must not wait for a CPU: with
# concurrency x num_cpus_per_actor = every CPU, the actors would hold them all and the read tasks
# that feed them would never start.
IO_TASKS = {"num_cpus": 0}


def read(path: str) -> ray.data.Dataset:
    if path.endswith((".jsonl", ".json")):
        return ray.data.read_json(path, ray_remote_args=IO_TASKS)
    return ray.data.read_parquet(path, ray_remote_args=IO_TASKS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="JSON lines (.jsonl/.json) or Parquet with a 'prompt' or 'messages' column")
    p.add_argument("output", help="output directory: Parquet files, JSON lines if the name ends in .jsonl")
    p.add_argument(
        "--model",
        help="model directory or .gguf file, at the same path on every node (default: SmolLM2-135M-Instruct)",
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="actors, each with its own copy of the model")
    p.add_argument("--num-cpus-per-actor", type=int, default=1, help="CPUs Ray reserves per actor = its threads")
    p.add_argument("--batch-size", type=int, default=32, help="rows per map_batches call")
    p.add_argument(
        "--address",
        help="Ray cluster to join ('auto': the one started on this node by `ray start`); "
        "default: $RAY_ADDRESS, else a local cluster for this run",
    )
    args = p.parse_args()

    if args.model is None:
        from fasttx.hub import default_model_path

        args.model = str(default_model_path(progress=True))
    ray.init(address=args.address)

    ds = read(args.input).map_batches(
        fasttx.ray.Generator,
        fn_constructor_kwargs={"model": args.model, "max_new_tokens": args.max_new_tokens},
        concurrency=args.concurrency,
        num_cpus=args.num_cpus_per_actor,
        batch_size=args.batch_size,
    )
    if Path(args.output).name.endswith(".jsonl"):
        ds.write_json(args.output, ray_remote_args=IO_TASKS)
    else:
        ds.write_parquet(args.output, ray_remote_args=IO_TASKS)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
