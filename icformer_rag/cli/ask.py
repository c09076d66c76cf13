"""`icformer-rag ask`: answer a question over documents, from their digests (or the full text, the baseline)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import loading
from .common import (
    DEFAULT_MAX_NEW_TOKENS,
    DIGEST_SUFFIX,
    EXIT_OK,
    TEXT_SUFFIXES,
    CLIError,
    SubParsers,
    add_command,
    add_json_option,
    check_unicode,
    emit_json,
    expand_paths,
    is_digest_file,
    load_digest_file,
    read_text,
    sample_files,
)
from .options import ModelOptions


def register_ask(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "ask",
        run_ask,
        help="answer a question over documents (digests, or the full text with --full-context)",
        description="Answer QUESTION over documents. By default the documents are compressed to digests that "
        "the LLM reads in place of the text; --full-context gives the LLM the full text instead (the "
        "baseline). Without --docs, the sample documents shipped with icformer-rag are used.",
    )
    p.add_argument("question", metavar="QUESTION")
    p.add_argument(
        "--docs",
        nargs="+",
        metavar="FILE",
        help=f"text files, directories, or {DIGEST_SUFFIX} files saved by `compress` (default: the samples)",
    )
    p.add_argument("--full-context", action="store_true", help="read the full text, not digests (the baseline)")
    p.add_argument(
        "--key-terms",
        action="store_true",
        help="after each document's digests, also give the LLM a plain line of its names and numbers (~50 tokens; "
        "better answers on names, dates and counts; text files only)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help=f"answer length limit (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        metavar="X",
        help="above 1 discourages the answer from repeating its own tokens, e.g. 1.2 (default 1.0: off)",
    )
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    add_json_option(p)


def run_ask(args: argparse.Namespace) -> int:
    from ..generation import GenerationSettings, SoftPromptLM
    from ..key_terms import with_key_terms
    from ..store import digest_key

    if not args.question.strip():
        raise CLIError("the question is empty")
    check_unicode(args.question, "the question")
    if args.stream and args.json:
        raise CLIError("--stream prints the answer as it comes, --json one document at the end: give one of them")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
    files = expand_paths(args.docs, (*TEXT_SUFFIXES, DIGEST_SUFFIX)) if args.docs else sample_files()
    if args.full_context:
        digest_file = next((p for p in files if is_digest_file(p)), None)
        if digest_file is not None:
            raise CLIError(f"--full-context reads the text, but {digest_file} is a digest: give the text file")
        if args.key_terms:
            raise CLIError("--key-terms adds a line beside digests; with --full-context the LLM already reads the text")
    # Digest files are read before the models load, so that a bad one fails at once. One digest under two names
    # (`compress` saves <stem> and <key> names of each: `--docs DIR` finds both) is read once.
    saved: dict[Path, Any] = {}
    keys: set[str] = set()
    for path in [p for p in files if is_digest_file(p)]:
        digest = load_digest_file(path)
        if digest_key(digest) in keys:
            files.remove(path)
            continue
        keys.add(digest_key(digest))
        saved[path] = digest
    digest_files = [p for p in files if is_digest_file(p)]
    text_files = [p for p in files if not is_digest_file(p)]
    texts = {p: read_text(p) for p in text_files}

    options = ModelOptions.from_args(args)
    models = loading.load_models(options, need_compressor=not args.full_context)
    for path, digest in saved.items():
        if digest.fingerprint != models.compressor.fingerprint:
            raise CLIError(
                f"{path} was made by compressor {digest.fingerprint}, not by this LLM's compressor "
                f"{models.compressor.fingerprint}: recompress it (icformer-rag compress)"
            )
    lm = SoftPromptLM(models.llm, models.tokenizer, models.compressor)
    ids = models.tokenizer(list(texts.values()), add_special_tokens=False)["input_ids"] if texts else []
    doc_tokens = {p: len(t) for p, t in zip(texts, ids, strict=True)}

    compress_seconds = 0.0
    contexts: dict[Path, Any] = {}
    if args.full_context:
        contexts = dict(texts)
    else:
        start = time.perf_counter()
        digests = iter(models.compressor.compress(list(texts.values())))
        compress_seconds = time.perf_counter() - start
        for path in files:  # keep the order the user gave
            contexts[path] = saved[path].to(lm.device) if is_digest_file(path) else next(digests)
        for path in digest_files:
            doc_tokens[path] = contexts[path].num_tokens
    ordered: list[Any] = [contexts[p] for p in files]
    if args.key_terms:  # each document's line after its digests; a digest file has no text to take one from
        ordered = with_key_terms(ordered, [texts.get(p) for p in files])
    term_lines = len(ordered) - len(files)
    if args.key_terms and digest_files:
        print(f"(--key-terms: {len(digest_files)} digest file(s) have no text, so no key terms)", file=sys.stderr)
    positions = lm.build_inputs(args.question, ordered).shape[0]

    start = time.perf_counter()
    first_chunk = None
    if args.stream:
        for chunk in lm.stream(args.question, ordered, settings):
            first_chunk = first_chunk or time.perf_counter() - start
            print(chunk, end="", flush=True)
        print()
    else:
        answer = lm.generate(args.question, ordered, settings)
        if not args.json:
            print(answer)
    generate_seconds = time.perf_counter() - start

    tokens = sum(doc_tokens.values())
    vectors = 0 if args.full_context else sum(len(contexts[p]) for p in files)
    untrained = not args.full_context and not models.trained
    if args.json:
        emit_json(
            {
                "command": "ask",
                "question": args.question,
                "answer": answer,
                "mode": "full_context" if args.full_context else "digests",
                "documents": [
                    {
                        "file": str(p),
                        "source": "digest_file" if is_digest_file(p) else "text",
                        "tokens": doc_tokens[p],
                        **({} if args.full_context else {"digests": len(contexts[p])}),
                    }
                    for p in files
                ],
                "total": {
                    "documents": len(files),
                    "tokens": tokens,
                    "digests": None if args.full_context else vectors,
                    "key_term_lines": term_lines,
                    "compressed": 0 if args.full_context else len(text_files),
                    "loaded_from_digest_files": len(digest_files),
                },
                "prompt_positions": positions,
                "seconds": {
                    "load": round(models.load_seconds, 4),
                    "compress": None if args.full_context or not text_files else round(compress_seconds, 4),
                    "generate": round(generate_seconds, 4),
                },
                "llm": loading.llm_report(models),
                "compressor": loading.compressor_report(models),
                "meaningful": not untrained,  # False: an untrained compressor's digests, so noise
            }
        )
        if untrained:
            print("(untrained compressor: the answer is not meaningful; compare --full-context)", file=sys.stderr)
        return EXIT_OK

    if args.full_context:
        how = f"full context: {len(files)} document(s), {tokens:,} tokens of text in the prompt"
        compress_line = "compress   -         (full context)"
    else:
        how = f"digests: {len(files)} document(s), {tokens:,} tokens read as {vectors:,} digest vectors"
        if args.key_terms:
            how += f", plus {term_lines} key-term line(s)"
        loaded = f"{len(digest_files)} loaded from digest files"
        if text_files:
            done = f"{len(text_files)} document(s) compressed" + (f", {loaded}" if digest_files else "")
            compress_line = f"compress   {compress_seconds:6.2f} s  ({done})"
        else:
            compress_line = f"compress   -         ({loaded})"
    ttft = f", first text after {first_chunk:.2f} s" if first_chunk is not None else ""
    print(
        f"\n{how}\n{compress_line}\ngenerate   {generate_seconds:6.2f} s  (prompt of {positions:,} positions{ttft})",
        file=sys.stderr,
    )
    if untrained:
        print("(untrained compressor: the answer above is not meaningful; compare --full-context)", file=sys.stderr)
    return EXIT_OK
