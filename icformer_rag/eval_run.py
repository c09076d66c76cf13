"""One evaluation run (`icformer-rag eval`): every checkpoint against the real-text dev set's auto-encoding and QA
(:mod:`icformer_rag.eval`) and the counterfactual set (:mod:`icformer_rag.counterfactual`), printed as a table and
written as one JSON report. It sits above both, so that neither imports the other's runner."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .compressor import ContextCompressor
from .counterfactual import (
    CounterfactualEval,
    CounterfactualSettings,
    compare_autoencoding,
    compare_checkpoints,
    format_counterfactual,
    load_counterfactual,
    load_text_reader,
)
from .eval import BASELINE_MODES, eval_autoencoding, eval_qa, load_qa, qa_answers
from .generation import SoftPromptLM
from .llm import load_llm


def format_table(report: dict[str, Any]) -> str:
    """A short text table of an evaluation report."""
    lines = ["metric                          value"]
    for n, r in report.get("autoencoding", {}).items():
        lines.append(f"AE BLEU-4 ({n} tokens, {r['compression']}x)     {r['bleu4']:.4f}")
        lines.append(f"AE token accuracy ({n} tokens)   {r['token_acc']:.4f}")
        if r.get("fact_recall") is not None:
            lines.append(f"AE fact recall ({n} tokens)      {r['fact_recall']:.4f}  ({r['facts']} facts)")
    qa = report.get("qa")
    if qa:
        for mode, value in qa["accuracy"].items():
            lines.append(f"QA accuracy, {mode:<19}{value:.3f}  (n={qa['examples']})")
        if qa["digest_over_full"] is not None:
            lines.append(f"{'QA digests / full text':<32}{qa['digest_over_full']:.3f}")
        if qa.get("digest_key_terms_over_full") is not None:
            lines.append(f"{'QA digests+terms / full text':<32}{qa['digest_key_terms_over_full']:.3f}")
        for kind, r in qa.get("by_kind", {}).items():
            extra = (
                f"  digests+terms {r['digests_key_terms']:.3f}  terms {r['key_terms']:.3f}" if "key_terms" in r else ""
            )
            lines.append(
                f"  {kind:<12} (n={r['examples']:>3}) full {r['full_text']:.3f}  digests {r['digests']:.3f}  "
                f"none {r['no_context']:.3f}{extra}"
            )
    if "counterfactual" in report:
        lines.append(format_counterfactual(report["counterfactual"]))
    return "\n".join(lines)


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`run_eval` evaluates (`icformer-rag eval`'s options fill it).

    `checkpoints`: compressor folders (None: the shipped one); with several, the full-text and no-context QA
    answers, which do not depend on the compressor, are generated once for all of them. At least one of
    `data_dir` (auto-encoding on the corpus's held-out windows), `qa` (a QA JSONL) and `counterfactual` (a
    folder of the counterfactual set, run per `counterfactual_settings`) is needed.
    """

    checkpoints: tuple[str | Path | None, ...] = (None,)
    llm: str | Path | None = None
    device: str | None = None
    dtype: str | None = None
    data_dir: str | Path | None = None
    ae_windows: int = 64
    ae_lengths: tuple[int, ...] = (512,)
    qa: str | Path | None = None
    qa_limit: int | None = None
    batch_size: int = 16
    untrained: bool = False  # a freshly initialised compressor (no checkpoint)
    key_terms: bool = False  # QA also from digests + each context's key-terms line, and from the line alone
    out: str | Path | None = None  # the JSON report's file
    counterfactual: str | Path | None = None
    counterfactual_settings: CounterfactualSettings | None = None  # None: CounterfactualSettings()
    text_adapter: str | Path | None = None  # a peft LoRA adapter that reads the full text (the full_tuned mode)


def _evaluate_one(
    compressor: ContextCompressor,
    llm: Any,
    tokenizer: Any,
    config: EvalConfig,
    label: str,
    qa: dict[str, Any] | None,
    counterfactual: Any = None,
) -> dict[str, Any]:
    """One checkpoint's report; `qa` holds the QA records and the shared baseline answers, if any, and
    `counterfactual` the :class:`~icformer_rag.counterfactual.CounterfactualEval` shared by all checkpoints."""
    report: dict[str, Any] = {
        "checkpoint": label,
        "fingerprint": compressor.fingerprint,
        "llm": compressor.config.llm.describe(),
        "device": str(compressor.device),
        "gpu": torch.cuda.get_device_name(compressor.device) if compressor.device.type == "cuda" else None,
        "dtype": str(compressor.dtype),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    t = time.perf_counter()
    if config.data_dir:
        report["autoencoding"] = eval_autoencoding(
            compressor, llm, config.data_dir, config.ae_windows, config.ae_lengths, batch_size=config.batch_size * 2
        )
    if qa is not None:
        lm = SoftPromptLM(llm, tokenizer, compressor)
        report["qa"] = eval_qa(
            lm,
            qa["records"],
            batch_size=config.batch_size,
            baselines=qa["baselines"],
            key_terms=config.key_terms,
        )
    if counterfactual is not None:
        report["counterfactual"] = counterfactual.evaluate(compressor)
    report["seconds"] = round(time.perf_counter() - t, 1)
    return report


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate per `config`; prints a table, returns (and writes to `config.out`) the report.

    With several checkpoints the report is `{"checkpoints": [one report each]}`
    and the full-text / no-context QA answers, which do not depend on the compressor, are generated once.
    """
    cf_dir = config.counterfactual
    if not config.data_dir and not config.qa and not cf_dir:
        raise ValueError("give --data-dir (auto-encoding eval), --qa (QA eval) and/or --counterfactual DIR")
    if config.data_dir and config.ae_windows < 1:
        # Checked before the LLM loads (eval_autoencoding checks it too, for Python callers), naming the flag.
        raise ValueError(f"--ae-windows must be >= 1, got {config.ae_windows}; for a QA-only eval leave out --data-dir")
    checkpoints = list(config.checkpoints) or [None]
    if config.untrained and checkpoints != [None]:
        raise ValueError("--untrained evaluates a fresh compressor: give no --checkpoint with it")
    for c in checkpoints:
        if c is not None and not Path(c).exists():
            raise FileNotFoundError(f"no checkpoint at {c}")
    cf_data = None
    if cf_dir:  # checked before the LLM loads: a bad folder fails in a second, not after minutes
        cf_settings = config.counterfactual_settings or CounterfactualSettings()
        cf_data = load_counterfactual(cf_dir, cf_settings.limit, cf_settings.multidoc)
        if config.text_adapter and not (Path(config.text_adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--text-adapter {config.text_adapter}: no adapter_config.json there")
    llm, tokenizer = load_llm(config.llm, device=config.device, dtype=config.dtype)
    counterfactual = None
    if cf_data is not None:
        text_lm = (
            load_text_reader(config.text_adapter, config.llm, config.device, config.dtype)
            if config.text_adapter
            else None
        )
        counterfactual = CounterfactualEval(cf_data, llm, tokenizer, cf_settings, text_lm=text_lm)
    qa = None
    if config.qa:
        records = load_qa(config.qa, config.qa_limit)
        baselines = {}
        if len(checkpoints) > 1:
            plain = SoftPromptLM(llm, tokenizer)
            baselines = {m: qa_answers(plain, records, m, config.batch_size) for m in BASELINE_MODES}
        qa = {"records": records, "baselines": baselines}
    reports = []
    for c in checkpoints:
        if config.untrained:
            compressor = ContextCompressor.from_llm(llm, tokenizer)
        else:
            compressor = ContextCompressor.from_pretrained(c, llm, tokenizer, allow_untrained=False)
        label = "untrained" if config.untrained else str(c)
        report = _evaluate_one(compressor, llm, tokenizer, config, label, qa, counterfactual)
        if len(checkpoints) > 1:
            print(f"== {report['checkpoint']}")
        print(format_table(report))
        reports.append(report)
        if config.out and len(reports) < len(checkpoints):
            # A long multi-checkpoint eval that is cut off (a device call's time limit) keeps what it finished.
            _write_json(config.out, {"checkpoints": reports, "partial": True})
    result = reports[0] if len(reports) == 1 else {"checkpoints": reports}
    if counterfactual is not None and len(reports) > 1:
        result["checkpoint_tests"] = _compare_counterfactual(reports)
    if config.out:
        _write_json(config.out, result)
    return result


def _write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _compare_counterfactual(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired sign tests between the checkpoints on each compressor-dependent counterfactual mode; printed."""
    cf = [r["counterfactual"] for r in reports]
    labels = [r["checkpoint"] for r in reports]
    tests = [t for m in ("digests", "digests_key_terms", "oracle") for t in compare_checkpoints(cf, labels, m)]
    tests += compare_autoencoding(cf, labels)
    for t in tests:
        unit = f" by {t['unit']}" if "unit" in t else ""
        print(f"{t['variant']} {t['mode']}{unit}: {t['a']} vs {t['b']}: +{t['wins']}/-{t['losses']}, p={t['p']:.3g}")
    return tests
