"""The `icformer-rag` command line, run in-process through main(argv).

Tests marked slow load the real default LLM (SmolLM2-135M-Instruct, CPU fp32); the CLI keeps it loaded
between main() calls of one process, so the module pays for one load.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icformer_rag import Digest, ICFormerConfig
from icformer_rag.cli import (
    DIGEST_SUFFIX,
    SAMPLES_DIR,
    CLIError,
    ModelOptions,
    add_command,
    build_parser,
    expand_paths,
    main,
    register_info,
    sample_files,
)
from icformer_rag.compressor import DEFAULT_CHECKPOINT

VELMORA = SAMPLES_DIR / "velmora.txt"
CPU = ["--device", "cpu", "--dtype", "float32"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err)
    return errors[0]


# ------------------------------------------------------------------------------------ no model needed
def test_parser_has_the_subcommands_and_takes_new_ones() -> None:
    parser = build_parser()
    args = parser.parse_args(["ask", "Who?", "--docs", "a.txt", "--full-context", *CPU])
    assert (args.command, args.question, args.docs, args.full_context, args.device) == (
        "ask",
        "Who?",
        ["a.txt"],
        True,
        "cpu",
    )
    assert parser.parse_args(["compress", "a.txt", "b.md", "--out", "d"]).files == ["a.txt", "b.md"]

    def run_hello(args: argparse.Namespace) -> int:
        return 7

    def register_hello(subparsers: object) -> None:
        add_command(subparsers, "hello", run_hello, help="say hello").add_argument("--name")

    extended = build_parser([register_info, register_hello])
    args = extended.parse_args(["hello", "--name", "x", "--llm", "some/path"])
    assert args.handler(args) == 7 and args.llm == "some/path"


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "compress" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "icformer-rag 0.1.0" in capsys.readouterr().out
    assert main([]) == 2  # no subcommand: argparse's usage error


def test_every_subcommand_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse %-formats help texts: a literal percent sign in one (a training option said "~15% of") once broke
    `icformer-rag train --help` with a TypeError."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "eval", "data", "ask", "compress"} <= set(subparsers.choices)
    for name in subparsers.choices:
        assert main([name, "--help"]) == 0, name
        assert "usage" in capsys.readouterr().out, name


def test_samples_ship_with_the_package() -> None:
    files = sample_files()
    assert 4 <= len(files) <= 6
    assert VELMORA in files
    for path in files:
        words = len(path.read_text(encoding="utf-8").split())
        assert 150 <= words <= 600, (path, words)
    assert "Ada Krenn" in VELMORA.read_text(encoding="utf-8")


def test_directories_expand_sorted_and_skip_hidden(tmp_path: Path) -> None:
    for name in ("b.md", "a.txt", "notes.pdf", ".hidden.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text")
    found = expand_paths([tmp_path, tmp_path / "a.txt"])  # a.txt named twice: read once
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.txt", "b.md", "sub/c.txt"]
    with pytest.raises(CLIError, match="no such file"):
        expand_paths([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIError, match="no .txt or .md files"):
        expand_paths([tmp_path / "empty"])


@pytest.mark.parametrize("command", ["ask", "compress"])
def test_missing_file_is_a_one_line_error(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.txt")
    argv = (
        ["ask", "Who?", "--docs", missing]
        if command == "ask"
        else ["compress", missing, "--out", str(tmp_path / "out")]
    )
    assert main(argv) == 2
    assert "nope.txt" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_empty_file_is_a_clear_error(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(content)
    assert main(["compress", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "empty.txt is empty" in _one_line_error(capsys)
    assert main(["ask", "Who?", "--docs", str(empty), "--full-context"]) == 2
    assert "is empty" in _one_line_error(capsys)


def test_bad_inputs_fail_before_any_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["ask", "Who?", "--docs", str(latin1)]) == 2
    assert "not UTF-8" in _one_line_error(capsys)

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "x.md").write_text("two")
    assert main(["compress", str(tmp_path / "a"), str(tmp_path / "x.md"), "--out", str(tmp_path / "o")]) == 2
    assert f"x{DIGEST_SUFFIX}" in _one_line_error(capsys)

    digest = tmp_path / f"v{DIGEST_SUFFIX}"
    digest.write_bytes(b"not read")
    assert main(["ask", "Who?", "--docs", str(digest), "--full-context"]) == 2
    assert "--full-context reads the text" in _one_line_error(capsys)

    assert main(["ask", "   ", "--docs", str(VELMORA)]) == 2
    assert "question is empty" in _one_line_error(capsys)
    assert main(["ask", "Who?", "--max-new-tokens", "0", "--full-context"]) == 2
    assert "max_new_tokens" in _one_line_error(capsys)
    assert main(["ask", "Who?", "--repetition-penalty", "0", "--full-context"]) == 2
    assert "repetition_penalty" in _one_line_error(capsys)
    assert main(["ask", "Who?", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "no compressor checkpoint folder" in _one_line_error(capsys)


def test_python_dash_m_runs_the_cli() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "icformer_rag", "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "icformer-rag 0.1.0"


# ------------------------------------------------------------------------------------ the real LLM
@pytest.mark.slow
def test_info_reports_versions_devices_llm_and_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    import transformers

    from icformer_rag.llm import default_llm_path

    default_llm_path()  # info never converts the default LLM; the other commands do, once
    assert main(["info", *CPU]) == 0
    out = capsys.readouterr().out
    assert f"torch         {torch.__version__}" in out
    assert f"transformers  {transformers.__version__}" in out
    assert "cpu" in out and "SmolLM2-135M-Instruct" in out
    assert "converted     " in out and "not yet" not in out
    assert "fingerprint" in out and "parameters" in out
    assert "trained       yes (the shipped checkpoint)" in out


@pytest.mark.slow
def test_info_on_a_saved_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icformer_rag import ContextCompressor
    from icformer_rag.cli import load_models

    models = load_models(ModelOptions(device="cpu", dtype="float32"), need_compressor=False)
    saved = ContextCompressor.from_llm(models.llm, models.tokenizer, seed=1)
    saved.save_pretrained(tmp_path / "ckpt")
    assert main(["info", *CPU, "--checkpoint", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert f"fingerprint   {saved.fingerprint}" in out
    assert "fits the LLM  yes" in out


@pytest.mark.slow
def test_compress_writes_loadable_digests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icformer_rag.llm import load_default_tokenizer
    from icformer_rag.windows import split_windows

    files = [SAMPLES_DIR / "port_alder.txt", VELMORA]
    assert main(["compress", *map(str, files), "--out", str(tmp_path), *CPU]) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.err  # the shipped checkpoint is trained
    tokenizer = load_default_tokenizer()
    shipped = ICFormerConfig.load(DEFAULT_CHECKPOINT)
    ratio = shipped.window_tokens // shipped.num_digest_tokens  # 2 for the shipped run 12 (the paper's 4x was 4)
    for path in files:
        digest = Digest.load(tmp_path / f"{path.stem}{DIGEST_SUFFIX}")
        tokens = len(tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
        assert digest.num_tokens == tokens
        windows = split_windows(range(tokens), 512)
        assert digest.window_digests == [math.ceil(len(w) / ratio) for w in windows]
        assert len(digest) == sum(digest.window_digests) and digest.embeddings.shape[1] == 576
        assert str(path) in captured.out and f"{tokens:,}" in captured.out
    assert "total" in captured.out and "compressed 2 file(s) in" in captured.out


@pytest.mark.slow
def test_ask_full_context_finds_the_founder(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ask", "Who founded Velmora?", "--docs", str(VELMORA), "--full-context", "--max-new-tokens", "40"]
    assert main([*argv, *CPU]) == 0
    captured = capsys.readouterr()
    assert "Ada Krenn" in captured.out
    assert "full context: 1 document(s)" in captured.err and "generate" in captured.err


@pytest.mark.slow
def test_ask_from_digests_and_saved_digest_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "Who founded Velmora?", "--max-new-tokens", "8", *CPU]) == 0  # default docs: samples
    captured = capsys.readouterr()
    assert captured.out.strip()
    assert f"digests: {len(sample_files())} document(s)" in captured.err
    assert "compress " in captured.err and "generate " in captured.err and " s  (" in captured.err

    assert main(["compress", str(VELMORA), "--out", str(tmp_path), *CPU]) == 0
    capsys.readouterr()
    saved = tmp_path / f"velmora{DIGEST_SUFFIX}"
    argv = ["ask", "Who?", "--docs", str(saved), str(SAMPLES_DIR / "port_alder.txt"), "--max-new-tokens", "4"]
    assert main([*argv, "--stream", *CPU]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    assert "1 document(s) compressed, 1 loaded from digest files" in captured.err
    assert "first text after" in captured.err


@pytest.mark.slow
def test_ask_with_key_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The names-and-numbers line goes after each text document's digests; a digest file has no text to take
    # it from, and the command says so.
    from icformer_rag.key_terms import key_terms_line

    assert main(["compress", str(SAMPLES_DIR / "port_alder.txt"), "--out", str(tmp_path), *CPU]) == 0
    capsys.readouterr()
    docs = ["--docs", str(VELMORA), str(tmp_path / f"port_alder{DIGEST_SUFFIX}")]
    positions = {}
    for flags in ([], ["--key-terms"]):
        assert main(["ask", "Who founded Velmora?", *docs, "--max-new-tokens", "4", *flags, *CPU]) == 0
        err = capsys.readouterr().err
        positions[bool(flags)] = int(err.split("prompt of ")[1].split(" positions")[0].replace(",", ""))
    assert "plus 1 key-term line(s)" in err and "1 digest file(s) have no text" in err
    line = key_terms_line(VELMORA.read_text(encoding="utf-8"))
    assert "Ada Krenn" in line
    from icformer_rag.llm import load_default_tokenizer

    added = len(load_default_tokenizer()("\n" + line, add_special_tokens=False)["input_ids"])
    assert abs(positions[True] - positions[False] - added) <= 2  # the line's tokens, and nothing else


def test_ask_refuses_key_terms_with_full_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "Who?", "--docs", str(VELMORA), "--full-context", "--key-terms", *CPU]) == 2
    assert "--key-terms" in _one_line_error(capsys)


@pytest.mark.slow
def test_digest_from_another_compressor_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icformer_rag import ContextCompressor
    from icformer_rag.cli import load_models

    models = load_models(ModelOptions(device="cpu", dtype="float32"), need_compressor=False)
    other = ContextCompressor.from_llm(models.llm, models.tokenizer, seed=2)
    other.compress([VELMORA.read_text(encoding="utf-8")])[0].save(tmp_path / f"v{DIGEST_SUFFIX}")
    assert main(["ask", "Who?", "--docs", str(tmp_path / f"v{DIGEST_SUFFIX}"), *CPU]) == 2
    assert "recompress" in _one_line_error(capsys)


ROOT = Path(__file__).resolve().parents[1]


def test_bench_passes_its_options_to_the_benchmark_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("benchmarks.run_all")
    monkeypatch.chdir(ROOT)  # the clone: an installed icformer_rag (CI's wheel) finds benchmarks/ in the current folder
    assert main(["bench", "--suite", "smoke", "--only", "indexing", "--out", str(tmp_path)]) == 0
    assert list(tmp_path.rglob("*.json"))
    assert main(["info", "--no-such-option"]) == 2


def test_bench_outside_a_clone_says_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installed wheel has no benchmarks/: run from elsewhere, `bench` is one error line naming the fix."""
    from icformer_rag.cli import bench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site-packages" / "icformer_rag" / "cli" / "bench.py"))
    assert bench.find_repository() is None
    assert main(["bench", "--suite", "smoke"]) == 2
    assert "from a clone of the repository" in _one_line_error(capsys)


def test_importing_the_cli_imports_no_benchmarks() -> None:
    """The CLI is part of the installed package: it must not import the repository-only `benchmarks` package
    (nor build its parser from it); `bench` runs benchmarks/run_all.py by path when asked to."""
    code = (
        "import sys; import icformer_rag.cli as cli; cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m == 'benchmarks' or m.startswith('benchmarks.')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_model_options_are_defined_once() -> None:
    """--llm, --checkpoint, --device and --dtype come from icformer_rag.cli.options for every command that loads
    models (ask, compress, index, info, eval, data distill): the same help, defaults and group everywhere, and no
    other module of the CLI spells them out."""
    from icformer_rag.cli import options

    commands = _subparsers(build_parser())
    parsers = {name: commands[name] for name in ("ask", "compress", "index", "info", "eval")}
    parsers["data distill"] = _subparsers(commands["data"])["distill"]
    helps = {"--llm": options.LLM_HELP, "--device": options.DEVICE_HELP, "--dtype": options.DTYPE_HELP}
    for name, parser in parsers.items():
        for flag, text in helps.items():
            action = _option(parser, flag)
            assert (action.help, action.default) == (text, None), (name, flag)
        group = next(g for g in parser._action_groups if g.title == options.GROUP_TITLE)
        assert {a.option_strings[0] for a in group._group_actions} >= set(helps), name
    for name in ("ask", "compress", "index", "info"):
        assert _option(parsers[name], "--checkpoint").help == options.CHECKPOINT_HELP, name
    assert _option(parsers["eval"], "--checkpoint").nargs == "+"
    assert not any("--checkpoint" in a.option_strings for a in parsers["data distill"]._actions)
    # Two commands parse the same flags into the same ModelOptions.
    argv = ["--llm", "L", "--checkpoint", "C", "--device", "cpu", "--dtype", "float32"]
    ask = build_parser().parse_args(["ask", "Who?", *argv])
    compress = build_parser().parse_args(["compress", "a.txt", "--out", "d", *argv])
    assert options.ModelOptions.from_args(ask) == options.ModelOptions.from_args(compress)
    assert options.ModelOptions.from_args(ask) == options.ModelOptions("L", "C", "cpu", "float32")
    # The flags are written in options.py alone.
    package = Path(options.__file__).parent
    for path in package.glob("*.py"):
        if path.name != "options.py":
            text = path.read_text(encoding="utf-8")
            for flag in ("--llm", "--checkpoint", "--device", "--dtype"):
                assert f'"{flag}"' not in text, (path.name, flag)


def test_the_library_never_imports_the_cli() -> None:
    """The command line sits on top: no module of icformer_rag outside cli/ imports it (the `python -m` entry
    points, __main__.py, are the CLI's own), and the package imports nothing from the repository's benchmarks/."""
    import re

    import icformer_rag

    package = Path(icformer_rag.__file__).parent
    pattern = re.compile(r"^\s*(from\s+(\.+cli\b|icformer_rag\.cli\b)|import\s+icformer_rag\.cli\b)", re.M)
    bench = re.compile(r"^\s*(from|import)\s+benchmarks\b", re.M)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not bench.search(text), path
        if "cli" in path.relative_to(package).parts or path.name == "__main__.py":
            continue
        assert not pattern.search(text), path
