"""Indexing a corpus into a digest store (icformer_rag/indexing.py, issue 17): readers, chunking, resuming, one
digest per key, and the Ray Data path on a local two-CPU cluster against the single-process path (identical digests).

The tiny random compressor of conftest.py; no real LLM except the one CLI run marked slow.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from icformer_rag import PackedDigestStore, indexing
from icformer_rag.cli import main
from icformer_rag.digest import Digest
from icformer_rag.indexing import chunk_texts, index_documents, plan_shards, read_chunks
from icformer_rag.store import DigestStore, digest_key, key_for

REPO = Path(__file__).resolve().parents[1]
WORDS = "the town of Velmora was founded by Ada Krenn in 1723 near Marit Bridge on the north river".split()


def make_docs(n: int = 24, seed: int = 0) -> list[dict[str, str]]:
    """Short documents of 3 to ~90 tokens (1 to 3 chunks of the tiny 32-token window), one repeated in another
    shard, one of whitespace only."""
    rng = random.Random(seed)
    docs = [{"id": f"doc{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 70)))} for i in range(n)]
    docs[13]["text"] = docs[2]["text"]  # the same text in shards 0 and 2 (shard_size 6)
    docs[5]["text"] = " \n "
    return docs


def write_jsonl(path: Path, docs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def fp32_digests() -> tuple[dict[str, Digest], Callable[[indexing.ShardResult], None]]:
    """A dict filled by on_shard with every digest a run computed (fp32, before the store's bf16)."""
    seen: dict[str, Digest] = {}

    def on_shard(shard: indexing.ShardResult) -> None:
        for d in shard.digests:
            seen.setdefault(digest_key(d), d)

    return seen, on_shard


def stored(path: Path) -> dict[str, torch.Tensor]:
    with PackedDigestStore(path) as store:
        keys = list(store.keys())
        return {k: d.embeddings for k, d in zip(keys, store.get_many(keys), strict=True)}


# --------------------------------------------------------------------------------------------- chunks
def test_chunks_cover_the_text_in_windows(compressor) -> None:
    tok = compressor.tokenizer
    texts = [" ".join(WORDS * 5), "Velmora.", "   ", ""]
    chunks = chunk_texts(tok, texts, 32)
    assert ["".join(c) for c in chunks[:2]] == texts[:2] and chunks[2:] == [[], []]
    assert len(chunks[0]) == -(-len(tok(texts[0], add_special_tokens=False)["input_ids"]) // 32) > 1
    assert all(len(tok(c, add_special_tokens=False)["input_ids"]) <= 33 for c in chunks[0])


def test_compressor_pickles_for_the_actors(compressor) -> None:
    import copy
    import pickle

    clone = pickle.loads(pickle.dumps(compressor))
    texts = [" ".join(WORDS * 3), "Velmora."]
    assert clone.fingerprint == compressor.fingerprint == clone.compute_fingerprint()
    assert all(
        torch.equal(a.embeddings, b.embeddings)
        for a, b in zip(clone.compress(texts), compressor.compress(texts), strict=True)
    )
    compiled = copy.copy(compressor)
    compiled._compiled = object()  # what compile() sets
    with pytest.raises(TypeError, match="compiled"):
        pickle.dumps(compiled)


# --------------------------------------------------------------------------------------------- one process
def test_single_process_writes_one_digest_per_chunk_text(tmp_path, compressor) -> None:
    docs = make_docs()
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    seen, on_shard = fp32_digests()
    result = index_documents(src, tmp_path / "store", compressor=compressor, shard_size=6, on_shard=on_shard)
    chunks = list(read_chunks(tmp_path / "store"))
    texts = {c["text"] for c in chunks}
    assert (result.shards, result.skipped, result.documents, result.chunks) == (4, 0, 24, len(chunks))
    assert result.written == len(texts) == len(seen) < len(chunks)  # the repeated document is written once
    assert {c["doc"] for c in chunks} == {d["id"] for d in docs} - {"doc5"}
    by_doc = {}
    for c in chunks:
        by_doc.setdefault(c["doc"], []).append(c)
    assert all("".join(c["text"] for c in by_doc[d["id"]]) == d["text"] for d in docs if d["id"] in by_doc)
    assert all(c["key"] == key_for(c["text"], compressor.fingerprint) for c in chunks)
    held = stored(tmp_path / "store")
    assert set(held) == set(seen) == {c["key"] for c in chunks}
    for key, d in seen.items():  # stored as bf16 (the store's default)
        assert torch.equal(held[key], d.embeddings.to(torch.bfloat16).to(held[key].dtype))
    # The digests are the compressor's: as compress() gives them, up to batch rounding.
    text = next(iter(texts))
    assert torch.allclose(
        seen[key_for(text, compressor.fingerprint)].embeddings, compressor.compress([text])[0].embeddings, atol=1e-5
    )
    again = index_documents(src, tmp_path / "store", compressor=compressor, shard_size=6)
    assert (again.skipped, again.written, again.documents) == (4, 0, 0)


def test_jsonl_parquet_and_text_folder_index_alike(tmp_path, compressor) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = [d for d in make_docs()[:12] if d["text"].strip()]
    write_jsonl(tmp_path / "docs.jsonl", docs)
    pq.write_table(
        pa.table({"id": [d["id"] for d in docs], "body": [d["text"] for d in docs]}),
        tmp_path / "docs.parquet",
        row_group_size=4,
    )
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    for i, d in enumerate(docs):
        (folder / ("sub" if i % 2 else "") / f"{d['id']}.txt").write_text(d["text"], encoding="utf-8")
    (folder / ".hidden.txt").write_text("not a document", encoding="utf-8")
    runs = {
        "jsonl": dict(source=tmp_path / "docs.jsonl"),
        "parquet": dict(source=tmp_path / "docs.parquet", text_field="body"),
        "text": dict(source=folder),
    }
    keys = {}
    for name, kw in runs.items():
        result = index_documents(store=tmp_path / name, compressor=compressor, shard_size=5, show_progress=False, **kw)
        assert (result.documents, result.shards) == (len(docs), 3), name
        keys[name] = set(stored(tmp_path / name))
        ids = {c["doc"] for c in read_chunks(tmp_path / name)}
        assert ids == (
            {f"{'sub/' if i % 2 else ''}{d['id']}.txt" for i, d in enumerate(docs)}
            if name == "text"
            else {d["id"] for d in docs}
        )
    assert keys["jsonl"] == keys["parquet"] == keys["text"]
    # Parquet shards read only their row groups, and across row-group edges (5 rows from groups of 4).
    specs = plan_shards(tmp_path / "docs.parquet", shard_size=5, text_field="body")
    assert [(s.start, s.stop) for s in specs] == [(0, 5), (5, 10), (10, len(docs))]
    assert [i for i, _ in indexing.read_shard(specs[1], text_field="body")] == [d["id"] for d in docs[5:10]]


def test_bad_sources_are_refused_before_any_work(tmp_path, compressor, monkeypatch) -> None:
    def index(src, **kw):
        return index_documents(src, tmp_path / "store", compressor=compressor, show_progress=False, **kw)

    with pytest.raises(FileNotFoundError, match="no such file"):
        index(tmp_path / "missing.jsonl")
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="unknown document format"):
        index(tmp_path / "docs.csv")
    with pytest.raises(ValueError, match="unknown document format"):
        index(tmp_path, format="xml")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: no string field 'text'"):
        index(tmp_path / "bad.jsonl")
    (tmp_path / "mixed").mkdir()
    write_jsonl(tmp_path / "mixed" / "a.jsonl", [{"text": "a"}])
    (tmp_path / "mixed" / "b.txt").write_text("b")
    with pytest.raises(ValueError, match="jsonl and text files"):
        index(tmp_path / "mixed")
    assert index(tmp_path / "mixed", format="text").documents == 1
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ImportError, match=r"icformer-rag\[ray\]"):
        index(tmp_path / "mixed" / "a.jsonl", workers=2)
    with pytest.raises(TypeError, match="store must be"):
        index_documents(tmp_path / "mixed" / "a.jsonl", object(), compressor=compressor)
    with pytest.raises(ValueError, match="memory store"):
        index_documents(tmp_path / "mixed" / "a.jsonl", DigestStore(), compressor=compressor)


# --------------------------------------------------------------------------------------------- resuming
KILLED_RUN = """
import os, signal, sys
from conftest import TINY_COMPRESSOR, make_tiny_llm
from icformer_rag import ContextCompressor
from icformer_rag.indexing import index_documents
from icformer_rag.llm import load_tokenizer

tok = load_tokenizer()
compressor = ContextCompressor.from_llm(make_tiny_llm(len(tok)), tok, **TINY_COMPRESSOR)
print(compressor.fingerprint, flush=True)
done = []

def on_shard(shard):
    done.append(shard.spec.sha)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the second shard is committed

index_documents(sys.argv[1], sys.argv[2], compressor=compressor, shard_size=6, on_shard=on_shard, show_progress=False)
"""


def test_resume_after_kill_skips_finished_shards(tmp_path, compressor) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), str(REPO / "integrations")])}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(src), str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert killed.stdout.strip() == compressor.fingerprint  # the same compressor as this process's
    assert len(stored(tmp_path / "store")) > 0
    redone: list[str] = []
    result = index_documents(
        src, tmp_path / "store", compressor=compressor, shard_size=6, on_shard=lambda s: redone.append(s.spec.sha)
    )
    specs = plan_shards(src, shard_size=6)
    assert (result.skipped, len(redone)) == (2, 2) and redone == [s.sha for s in specs[2:]]
    fresh = index_documents(src, tmp_path / "fresh", compressor=compressor, shard_size=6, show_progress=False)
    resumed, uninterrupted = stored(tmp_path / "store"), stored(tmp_path / "fresh")
    assert set(resumed) == set(uninterrupted) and len(resumed) == fresh.written
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    lines = [json.loads(x) for x in (tmp_path / "store" / "indexing" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(x["shard"] for x in lines) == sorted(s.sha for s in specs)  # each shard committed once


def test_shard_cut_off_mid_commit_is_redone_without_writing_twice(tmp_path, compressor, monkeypatch) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs())
    real_add = indexing._Manifest.add
    calls = []

    def add_then_crash(self, entry):
        calls.append(entry)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the third shard's digests are in the store, its manifest line is not
        real_add(self, entry)

    monkeypatch.setattr(indexing._Manifest, "add", add_then_crash)
    with pytest.raises(KeyboardInterrupt):
        index_documents(src, tmp_path / "store", compressor=compressor, shard_size=6, show_progress=False)
    monkeypatch.setattr(indexing._Manifest, "add", real_add)
    written_before = len(stored(tmp_path / "store"))
    shards: list[indexing.ShardResult] = []
    result = index_documents(src, tmp_path / "store", compressor=compressor, shard_size=6, on_shard=shards.append)
    assert result.skipped == 2 and len(shards) == 2
    assert shards[0].written == 0 < len(shards[0].digests)  # redone, nothing written again
    assert len(stored(tmp_path / "store")) == written_before + shards[1].written


# --------------------------------------------------------------------------------------------- Ray
def test_ray_two_cpu_workers_give_the_single_process_digests(tmp_path, compressor) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'icformer-rag[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'icformer-rag[ray]')")
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(36))
    local, on_local = fp32_digests()
    single = index_documents(src, tmp_path / "single", compressor=compressor, shard_size=4, on_shard=on_local)
    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False)
    try:
        remote, collect = fp32_digests()
        order: list[str] = []

        def on_remote(shard: indexing.ShardResult) -> None:
            order.append(shard.spec.sha)
            collect(shard)

        on_ray = index_documents(
            src, tmp_path / "ray", compressor=compressor, shard_size=4, workers=2, on_shard=on_remote
        )
        assert order == [s.sha for s in plan_shards(src, shard_size=4)]  # committed in input order
        assert on_ray.ray and (on_ray.shards, on_ray.written, on_ray.chunks) == (9, single.written, single.chunks)
        assert set(remote) == set(local)
        assert all(torch.equal(remote[k].embeddings, local[k].embeddings) for k in local)  # fp32, bit for bit
        a, b = stored(tmp_path / "single"), stored(tmp_path / "ray")
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert list(read_chunks(tmp_path / "single")) == list(read_chunks(tmp_path / "ray"))
        # Ray resumes a store the single process wrote: nothing left to do.
        again = index_documents(src, tmp_path / "single", compressor=compressor, shard_size=4, use_ray=True)
        assert (again.skipped, again.written) == (9, 0)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------------- CLI
def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


def test_cli_index_errors(tmp_path, capsys, monkeypatch) -> None:
    assert main(["index", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "s")]) == 2
    assert "no such file or directory" in _error_line(capsys)
    (tmp_path / "docs.csv").write_text("x")
    assert main(["index", str(tmp_path / "docs.csv"), "--out", str(tmp_path / "s")]) == 2
    assert "unknown document format" in _error_line(capsys)
    assert main(["index", str(tmp_path), "--out", str(tmp_path / "s"), "--format", "xml"]) == 2  # argparse
    assert "invalid choice" in capsys.readouterr().err
    write_jsonl(tmp_path / "docs.jsonl", [{"text": "hello"}])
    (tmp_path / "file").write_text("x")
    assert main(["index", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in _error_line(capsys)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["index", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "s"), "--ray"]) == 1
    assert "pip install 'icformer-rag[ray]'" in _error_line(capsys)
    assert main(["index", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "s"), "--workers", "2"]) == 1
    assert "Ray Data" in _error_line(capsys)


@pytest.mark.slow
def test_cli_index_samples_with_the_default_llm(tmp_path, capsys) -> None:
    from icformer_rag.cli import SAMPLES_DIR, sample_files

    args = ["index", str(SAMPLES_DIR), "--out", str(tmp_path / "store"), "--device", "cpu", "--dtype", "float32"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"] == "index" and report["documents"] == len(sample_files())
    assert report["written"] == len(stored(tmp_path / "store")) > 0
    assert main(args) == 0
    assert "0 new digests" in capsys.readouterr().out


def test_ray_indexing_benchmark_one_process_smoke(tmp_path) -> None:
    """benchmarks/ray_indexing.py's structure, without starting Ray (`--workers` with no count: one process only)."""
    from benchmarks import ray_indexing

    out = ray_indexing.main(
        ["--shape", "tiny", "--num-docs", "4", "--doc-tokens", "40", "--workers", "--out", str(tmp_path), "--no-plot"]
    )
    (row,) = out["rows"]
    assert row["mode"] == "one process" and row["identical_to_one_process"] and row["chunks"] == 8
    assert json.loads(Path(out["json_path"]).read_text())["rows"][0]["chunks_per_s"] > 0
