"""What the installed distributions carry: every file of each package's source folder, package data included (the
shipped checkpoint with its reader adapter, the samples, py.typed). CI installs wheels, not editable, so a file the
build leaves out fails here instead of changing answers quietly (a checkpoint without `reader_adapter/` loads without
its reader adapter)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # import name -> its source folder in this repository
    "icformer_rag": ROOT / "icformer_rag",
    "langchain_icformer": ROOT / "integrations/langchain-icformer/langchain_icformer",
    "llama_index.llms.icformer": ROOT / "integrations/llama-index-icformer/llama_index/llms/icformer",
    "llama_index.postprocessor.icformer": ROOT / "integrations/llama-index-icformer/llama_index/postprocessor/icformer",
}


def _files(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_the_installed_package_has_every_file_of_its_source(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} is not installed")
    installed = Path(module.__file__).parent
    missing = _files(PACKAGES[name]) - _files(installed)
    assert not missing, f"{name} installed in {installed} lacks {sorted(missing)}"
    assert "py.typed" in _files(installed)


def test_the_shipped_checkpoint_has_its_reader_adapter():
    import icformer_rag

    checkpoint = Path(icformer_rag.__file__).parent / "checkpoints" / "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "reader_adapter/adapter_config.json"):
        assert (checkpoint / name).is_file(), name
    assert (checkpoint / "reader_adapter" / "adapter_model.safetensors").stat().st_size > 1_000_000


def test_llama_index_namespaces_stay_namespaces():
    """llama_index, llama_index.llms and llama_index.postprocessor are shared with llama-index-core and every other
    integration: an __init__.py in any of them would hide the others' packages."""
    # find_spec of a submodule imports its parents: without llama-index at all it raises instead of answering None.
    if importlib.util.find_spec("llama_index") is None or importlib.util.find_spec("llama_index.llms.icformer") is None:
        pytest.skip("llama-index-icformer is not installed")
    for name in ("llama_index", "llama_index.llms", "llama_index.postprocessor"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin in (None, "namespace"), f"{name} is a regular package: {spec.origin}"
    source = ROOT / "integrations/llama-index-icformer/llama_index"
    assert not [p for p in (source, source / "llms", source / "postprocessor") if (p / "__init__.py").exists()]
