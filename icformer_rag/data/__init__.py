"""Training data for the compressor: offline text sources, the tokenized corpus, instruction records.

Build everything with ``python -m icformer_rag.data build --out DIR``; see README.md in this folder.
"""

from .corpus import (
    CorpusConfig,
    Manifest,
    build_corpus,
    clean_text,
    prepare_documents,
    write_corpus,
)
from .instruct import (
    InstructConfig,
    InstructRecord,
    answer_in,
    build_instruct_train,
    build_qa_dev,
    distill,
    normalize_answer,
    read_records,
    write_records,
)
from .sources import SOURCES, Document, LocalTextSource, Source, SourceError, get_sources

__all__ = [
    "SOURCES",
    "CorpusConfig",
    "Document",
    "InstructConfig",
    "InstructRecord",
    "LocalTextSource",
    "Manifest",
    "Source",
    "SourceError",
    "answer_in",
    "build_corpus",
    "build_instruct_train",
    "build_qa_dev",
    "clean_text",
    "distill",
    "get_sources",
    "normalize_answer",
    "prepare_documents",
    "read_records",
    "write_corpus",
    "write_records",
]
