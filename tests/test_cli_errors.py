"""Issue 16, item 11: every CLI failure is one `error: ...` line on stderr and exit status 2; `compress --out DIR`
writes what `DigestStore(DIR)` reads; `--json` for `ask`, `compress` and `info`.

Most tests run `main(argv)` in-process with the conftest's tiny Llama and tiny compressor in place of the real
default LLM (`tiny_models`), so they take milliseconds; those marked slow load the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from icformer_rag import Digest, cli
from icformer_rag.cli import DIGEST_SUFFIX, SAMPLES_DIR, Models, main
from icformer_rag.compressor import DEFAULT_CHECKPOINT
from icformer_rag.store import DigestStore, key_for

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu", "--dtype", "float32"]
TEXT = "The town of Velmora was founded by the glassmaker Ada Krenn in 1723."


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


def run_cli(*args: str | bytes, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "icformer_rag", *args], stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=300
    )


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the LLM fails the test (pytest.fail: no `except Exception` swallows it): the input must be refused
    before the slow part. The cache of loaded LLMs starts empty, so that an LLM loaded by another test counts."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("the LLM was loaded before the bad input was refused")

    monkeypatch.setattr(cli.loading, "_LLM_CACHE", {})
    monkeypatch.setattr("icformer_rag.llm.load_llm", refuse)


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch, tiny_llm, tokenizer, compressor) -> Models:
    """The CLI's load_models answers with the tiny LLM and compressor (trained=True: no untrained warning)."""
    models = Models(tiny_llm, tokenizer, load_seconds=0.0, compressor=compressor, trained=True)

    def load(args: object, need_compressor: bool = True) -> Models:
        return models if need_compressor else Models(tiny_llm, tokenizer, 0.0)

    monkeypatch.setattr(cli.loading, "load_models", load)
    monkeypatch.setattr(cli.loading, "cached_llm", lambda options: (tiny_llm, tokenizer))
    return models


def a_text(tmp_path: Path, name: str = "velmora.txt", text: str = TEXT) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def copy_checkpoint(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, target)
    return target


# ------------------------------------------------------------------------------------ digest files
@pytest.mark.parametrize(
    ("drop", "change", "named"),
    [
        ("num_tokens", {}, "num_tokens"),
        (None, {"num_tokens": "abc"}, "num_tokens"),
        (None, {"window_digests": "[1,"}, "window_digests"),
    ],
)
def test_a_digest_file_with_bad_metadata_is_one_error_before_the_models_load(
    drop, change, named, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models
) -> None:
    """Repro: a digest file without `num_tokens` in its metadata,
        save_file({"embeddings": torch.zeros(2, 576)}, "nonum.digest.safetensors",
                  metadata={"format": "icformer-rag.digest.v1", "content_hash": "x", "fingerprint": "y"})
        icformer-rag ask "Who?" --docs nonum.digest.safetensors
    loaded the LLM, then printed a traceback ending in `KeyError: 'num_tokens'` (exit 1); `num_tokens: "abc"` said
    `error: invalid literal for int() with base 10: 'abc'` and a broken `window_digests` `error: Expecting value:
    line 1 column 4 (char 3)`, naming no file. Now: one line naming the file and the field, before any model loads.
    """
    meta = {
        "format": "icformer-rag.digest.v1",
        "num_tokens": "8",
        "content_hash": "0" * 64,
        "fingerprint": "f" * 16,
        "window_digests": "[2]",
        **change,
    }
    meta.pop(drop, None)
    path = tmp_path / f"bad{DIGEST_SUFFIX}"
    save_file({"embeddings": torch.zeros(2, 576)}, str(path), metadata=meta)
    assert main(["ask", "Who?", "--docs", str(path), *CPU]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and named in line


def test_a_file_that_is_no_digest_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models) -> None:
    """Repro: `icformer-rag ask Who? --docs junk.digest.safetensors` (random bytes) loaded the LLM before saying so."""
    path = tmp_path / f"junk{DIGEST_SUFFIX}"
    path.write_bytes(b"\x00\x01 not safetensors at all")
    assert main(["ask", "Who?", "--docs", str(path), *CPU]) == 2
    assert str(path) in one_error_line(capsys)


def test_a_digest_from_another_compressor_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models, llm_factory, tokenizer, compressor_kwargs
) -> None:
    """Repro: `ask --docs other.digest.safetensors` with a digest of another compressor said `digest of text
    3f2a... was made by compressor ...: recompress it` without naming the file among several given."""
    from icformer_rag import ContextCompressor

    other = ContextCompressor.from_llm(llm_factory(len(tokenizer), seed=5), tokenizer, seed=5, **compressor_kwargs)
    path = tmp_path / f"other{DIGEST_SUFFIX}"
    other.compress([TEXT])[0].save(path)
    assert main(["ask", "Who?", "--docs", str(a_text(tmp_path)), str(path), "--max-new-tokens", "2", *CPU]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "recompress" in line


# ------------------------------------------------------------------------------------ checkpoints
def test_a_pickle_checkpoint_is_one_error_before_the_llm_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models
) -> None:
    """Repro: a checkpoint folder whose model.safetensors is a torch.save (pickle) file,
        cp -r icformer_rag/checkpoints/smollm2-135m-instruct ck
        python -c "import torch; torch.save({'a': torch.zeros(2)}, 'ck/model.safetensors')"
        icformer-rag ask Who? --checkpoint ck        # LLM loaded, then a traceback: SafetensorError:
        icformer-rag info --checkpoint ck            #   Error while deserializing header: header too large (exit 1)
    Now both say it is a pickle file, not safetensors, in one line (exit 2); `ask` before the LLM loads."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(DEFAULT_CHECKPOINT / "config.json", ckpt / "config.json")
    torch.save({"a": torch.zeros(2)}, ckpt / "model.safetensors")
    assert main(["ask", "Who?", "--docs", str(a_text(tmp_path)), "--checkpoint", str(ckpt), *CPU]) == 2
    line = one_error_line(capsys)
    assert "pickle" in line and "model.safetensors" in line
    assert main(["info", "--checkpoint", str(ckpt), *CPU]) == 2
    line = one_error_line(capsys)
    assert "pickle" in line and "model.safetensors" in line


def test_a_checkpoint_with_broken_config_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models
) -> None:
    """Repro: `ask --checkpoint ck` with `{` as ck/config.json loaded the LLM, then said `error: Expecting property
    name enclosed in double quotes: line 1 column 2 (char 1)`, naming no file."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{")
    shutil.copy(DEFAULT_CHECKPOINT / "model.safetensors", ckpt / "model.safetensors")
    assert main(["ask", "Who?", "--docs", str(a_text(tmp_path)), "--checkpoint", str(ckpt), *CPU]) == 2
    line = one_error_line(capsys)
    assert str(ckpt) in line and "config.json" in line


@pytest.mark.slow
def test_a_checkpoint_with_mis_shaped_weights_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Repro: the shipped checkpoint copied, one weight cut by a row,
        s = load_file("ck/model.safetensors"); s["blocks.0.attn.k_proj.weight"] = s[...][:-1]; save_file(s, ...)
        icformer-rag ask Who? --checkpoint ck     # traceback: RuntimeError: Error(s) in loading state_dict for
        icformer-rag info --checkpoint ck         #   ICFormer: size mismatch for blocks.0.attn.k_proj.weight (exit 1)
    (with the weights checked against the config, `info` said `fits the LLM  NO: ... does not fit ...` and exit 0: a
    damaged checkpoint is not a checkpoint for another LLM). Now one error line naming the tensor, exit 2, for both."""
    ckpt = copy_checkpoint(tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    state["blocks.0.attn.k_proj.weight"] = state["blocks.0.attn.k_proj.weight"][:-1].contiguous()
    save_file(state, str(ckpt / "model.safetensors"))
    argv = ["ask", "Who?", "--docs", str(a_text(tmp_path)), "--checkpoint", str(ckpt), "--max-new-tokens", "2"]
    assert main([*argv, *CPU]) == 2
    assert "blocks.0.attn.k_proj.weight" in one_error_line(capsys)
    assert main(["info", "--checkpoint", str(ckpt), *CPU]) == 2
    captured = capsys.readouterr()
    assert "fits the LLM" not in captured.out
    assert "path          " in captured.out  # what info found before the failure is still shown
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "blocks.0.attn.k_proj.weight" in errors[0], captured.err


# ------------------------------------------------------------------------------------ disks
def _safetensors_io_error(reason: str, code: int):
    from safetensors import SafetensorError

    def fail(self: Digest, path: object) -> None:
        raise SafetensorError(f'Error while serializing: I/O error: {reason} (os error {code}) at path "{path}"')

    return fail


@pytest.mark.parametrize(("reason", "code"), [("No space left on device", 28), ("Read-only file system", 30)])
def test_a_full_or_read_only_disk_while_writing_digests_is_one_error(
    reason: str,
    code: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Repro (a 64 KiB tmpfs, `mount -t tmpfs -o size=64k tmpfs small`, filled; then remounted read-only):
        icformer-rag compress big.txt --out small/d
    compressed, then printed a traceback ending in `SafetensorError: Error while serializing: I/O error: No space
    left on device (os error 28)` (`Read-only file system (os error 30)`), exit 1. Simulated here where the disk
    fills after the check of --out: safetensors' write raises what it raises then. Now one line, exit 2, saying
    how many digest files were written; no half-written or temporary file is left."""
    out = tmp_path / "out"
    monkeypatch.setattr(Digest, "save", _safetensors_io_error(reason, code))
    assert main(["compress", str(a_text(tmp_path)), "--out", str(out), *CPU]) == 2
    line = one_error_line(capsys)
    assert reason in line and str(out) in line and "0 of 1 written" in line
    assert list(out.iterdir()) == []


def test_a_read_only_out_dir_is_refused_before_the_models_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repro (the read-only tmpfs above): `icformer-rag compress a.txt --out small/new` loaded the LLM, compressed,
    then printed a traceback ending in `OSError: [Errno 30] Read-only file system: 'small/new'` (exit 1). Simulated by
    a mkdir that raises EROFS (tests run as root, whom chmod does not stop). Now one line before any model loads."""
    out = tmp_path / "new"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == out:
            raise OSError(30, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["compress", str(a_text(tmp_path)), "--out", str(out), *CPU]) == 2
    line = one_error_line(capsys)
    assert "Read-only file system" in line and str(out) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder")
def test_a_chmod_read_only_out_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models) -> None:
    """Repro: `chmod 555 ro; icformer-rag compress a.txt --out ro` (as a user) failed after compressing."""
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["compress", str(a_text(tmp_path)), "--out", str(out), *CPU]) == 2
        assert "Permission denied" in one_error_line(capsys)
    finally:
        out.chmod(0o755)


class FullStdout:
    """A standard output on a full disk."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_full_disk_under_stdout_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repro: `icformer-rag info > /dev/full` printed a traceback ending in `OSError: [Errno 28] No space left on
    device` from the first print (exit 1). Now one error line (exit 2)."""
    monkeypatch.setattr(sys, "stdout", FullStdout())
    assert main(["compress", str(a_text(tmp_path)), "--out", str(tmp_path / "out"), *CPU]) == 2
    assert "No space left on device" in one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_info_into_dev_full_is_one_error() -> None:
    """Repro: `icformer-rag info > /dev/full`: a traceback, exit 1 (a real process: the interpreter's own flush at
    exit must not print `Exception ignored ...` either)."""
    with open("/dev/full", "w") as full:
        done = run_cli("info", *CPU, stdout=full)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == ["error: No space left on device"]


# ------------------------------------------------------------------------------------ text that is not UTF-8
def test_a_question_with_a_non_utf8_byte_is_one_clear_error(capsys: pytest.CaptureFixture[str], no_models) -> None:
    """Repro: `icformer-rag ask $'Who\\xff?' --docs a.txt` (a Latin-1 terminal, say) loaded the LLM and said
    `error: TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]`: Python hands the
    byte 0xff over as the lone surrogate U+DCFF. Now it names the byte, before any model loads."""
    assert main(["ask", "Who\udcff?", "--docs", str(SAMPLES_DIR / "velmora.txt"), "--full-context", *CPU]) == 2
    line = one_error_line(capsys)
    assert "not UTF-8" in line and "0xff" in line
    assert main(["ask", "Who\ud800?", "--docs", str(SAMPLES_DIR / "velmora.txt"), *CPU]) == 2
    assert "lone surrogate U+D800" in one_error_line(capsys)


def test_a_non_utf8_byte_on_a_real_command_line_is_one_clear_error(tmp_path: Path) -> None:
    """The same through a real process, with the raw byte in argv."""
    done = run_cli(
        b"ask", b"Who\xff?", b"--docs", str(a_text(tmp_path)).encode(), b"--full-context", *map(str.encode, CPU)
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, err
    assert "Traceback" not in err and "TextEncodeInput" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: the question is not UTF-8 text: byte 0xff at character 3 (is the terminal set to UTF-8?)"
    ]


# ------------------------------------------------------------------------------------ anything else
def test_an_unexpected_exception_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repro: any exception the CLI did not list (a RuntimeError from torch, say) escaped main() as a traceback
    (exit 1). Now one line with its type (exit 2); ICFORMER_RAG_DEBUG=1 adds the traceback."""

    def boom(args: object) -> int:
        raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    monkeypatch.setattr(cli.info, "run_info", boom)
    monkeypatch.delenv("ICFORMER_RAG_DEBUG", raising=False)
    assert main(["info"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: RuntimeError: CUDA error: an illegal memory access was encountered")
    monkeypatch.setenv("ICFORMER_RAG_DEBUG", "1")
    assert main(["info"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ compress --out = a store
def test_compress_out_is_a_digest_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models, compressor
) -> None:
    """Repro: after `icformer-rag compress velmora.txt --out DIR`, `DigestStore(DIR).get(key_for(text,
    fingerprint))` was None (the file was DIR/velmora.digest.safetensors, the store looks for DIR/<key>...), so
    `compress_cached` recompressed everything. Now each digest is saved under the store's name, and
    <stem>.digest.safetensors (what `ask --docs` read before) is the same file; `ask --docs DIR` reads it once."""
    texts = {"velmora.txt": TEXT, "port_alder.md": "Port Alder's lighthouse was lit in 1841 by Jonas Pell."}
    files = [a_text(tmp_path, name, text) for name, text in texts.items()]
    out = tmp_path / "digests"
    assert main(["compress", *map(str, files), "--out", str(out), *CPU]) == 0
    printed = capsys.readouterr().out

    store = DigestStore(out)
    for path, text in zip(files, texts.values(), strict=True):
        key = key_for(text, compressor.fingerprint)
        digest = store.get(key)
        assert digest is not None and digest.num_tokens > 0
        by_name = Digest.load(out / f"{path.stem}{DIGEST_SUFFIX}")  # what `ask --docs` reads, as before
        assert torch.equal(by_name.embeddings, digest.embeddings)
    _, hits = DigestStore(out).compress_cached(compressor, list(texts.values()))
    assert hits == [True, True]
    assert "DigestStore" in printed  # the command says so

    assert main(["ask", "Who founded Velmora?", "--docs", str(out), "--max-new-tokens", "2", *CPU]) == 0
    assert "digests: 2 document(s)" in capsys.readouterr().err  # four files, two digests

    # Compressing again replaces both names in place.
    assert main(["compress", str(files[0]), "--out", str(out), *CPU]) == 0
    assert len(list(out.glob(f"*{DIGEST_SUFFIX}"))) == 4


# ------------------------------------------------------------------------------------ --json
def test_compress_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models, compressor) -> None:
    """Repro: `icformer-rag compress a.txt --out DIR --json` was `error: unrecognized arguments: --json`."""
    path = a_text(tmp_path)
    out = tmp_path / "out"
    assert main(["compress", str(path), "--out", str(out), "--json", *CPU]) == 0
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["files"]
    key = key_for(TEXT, compressor.fingerprint)
    assert entry["file"] == str(path) and entry["key"] == key
    assert entry["store_file"] == str(out / f"{key}{DIGEST_SUFFIX}")
    assert entry["digest_file"] == str(out / f"velmora{DIGEST_SUFFIX}")
    digest = Digest.load(entry["digest_file"])
    assert (entry["tokens"], entry["digests"]) == (digest.num_tokens, len(digest))
    assert report["total"]["tokens"] == digest.num_tokens and report["total"]["files"] == 1
    assert report["compressor"] == {"fingerprint": compressor.fingerprint, "trained": True}
    assert {"seconds", "tokens_per_second", "llm", "out"} <= set(report)


@pytest.mark.parametrize("full_context", [False, True])
def test_ask_json(full_context: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models) -> None:
    """Repro: `icformer-rag ask Who? --json` was `error: unrecognized arguments: --json`."""
    path = a_text(tmp_path)
    flags = ["--full-context"] if full_context else []
    assert main(["ask", "Who founded Velmora?", "--docs", str(path), "--max-new-tokens", "3", "--json", *flags]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert isinstance(report["answer"], str) and report["question"] == "Who founded Velmora?"
    assert report["mode"] == ("full_context" if full_context else "digests")
    (doc,) = report["documents"]
    assert doc["file"] == str(path) and doc["source"] == "text" and doc["tokens"] > 0
    assert ("digests" in doc) is not full_context
    assert report["prompt_positions"] > 0 and report["seconds"]["generate"] >= 0
    assert "generate " not in captured.err  # the timings are in the document


def test_ask_json_refuses_stream(capsys: pytest.CaptureFixture[str], no_models) -> None:
    assert main(["ask", "Who?", "--json", "--stream", "--full-context"]) == 2
    assert "--json" in one_error_line(capsys)


def test_info_json(capsys: pytest.CaptureFixture[str], tiny_models) -> None:
    """Repro: `icformer-rag info --json` was `error: unrecognized arguments: --json`. (The tiny LLM stands in for the
    default one: the shipped checkpoint does not fit it, which info reports as data, not as an error.)"""
    import torch as torch_module

    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch"] == torch_module.__version__
    assert report["default_llm"]["name"] == "SmolLM2-135M-Instruct"
    assert report["devices"]["cpu"]["cores"] == os.cpu_count()
    checkpoint = report["checkpoint"]
    if checkpoint["path"] is not None:
        assert len(checkpoint["fingerprint"]) == 16 and checkpoint["parameters"] > 0
        config = checkpoint["config"]  # the checkpoint `info` found: its own window and digests give the ratio
        assert config["ratio"] == config["window_tokens"] // config["num_digest_tokens"] in (2, 4)
        if report["default_llm"]["converted"]:
            assert checkpoint["fits_llm"] is False and "hidden" in checkpoint["fits_llm_reason"]


@pytest.mark.slow
def test_json_with_the_real_llm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`info`, `compress` and `ask` --json with the default LLM and the shipped checkpoint."""
    assert main(["info", "--json", *CPU]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"]["fits_llm"] is True and info["checkpoint"]["source"] == "shipped"
    velmora = SAMPLES_DIR / "velmora.txt"
    assert main(["compress", str(velmora), "--out", str(tmp_path), "--json", *CPU]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["key"] == key_for(velmora.read_text(encoding="utf-8"), info["checkpoint"]["fingerprint"])
    argv = ["ask", "Who founded Velmora?", "--docs", entry["digest_file"], "--max-new-tokens", "8", "--json", *CPU]
    assert main(argv) == 0
    ask = json.loads(capsys.readouterr().out)
    assert ask["documents"][0]["source"] == "digest_file" and ask["total"]["loaded_from_digest_files"] == 1
    assert ask["answer"].strip()


@pytest.mark.slow
def test_info_shows_the_recomputed_fingerprint_and_refuses_a_stale_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Repro: the shipped checkpoint copied with `fingerprint.txt` rewritten to another value: `icformer-rag info
    --checkpoint ck` printed the stored (wrong) fingerprint and exit 0, while loading it refuses the stale value. Now
    info shows what loading computes, and a stored value that disagrees is one error line naming both."""
    ckpt = copy_checkpoint(tmp_path)
    good = (ckpt / "fingerprint.txt").read_text().strip()
    assert main(["info", "--checkpoint", str(ckpt), "--json", *CPU]) == 0
    assert good in capsys.readouterr().out
    (ckpt / "fingerprint.txt").write_text("0123456789abcdef\n")
    assert main(["info", "--checkpoint", str(ckpt), *CPU]) == 2
    line = one_error_line(capsys)
    assert "0123456789abcdef" in line and good in line
