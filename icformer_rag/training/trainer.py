"""The training loop: the LLM is frozen and never copied; only the compressor (and its special embeddings)
learns. Runs on one device or under `torchrun` with DistributedDataParallel; with `fsdp` the frozen LLM is
also sharded across the ranks with FSDP2 (see :func:`shard_frozen_llm`).

Exact resume: the batch of a step is a function of (seed, step, rank), the learning rate a function of
step, and a resume checkpoint holds weights, AdamW state and RNG state, so stopping at step s and resuming
reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import reader
from ..compressor import ContextCompressor
from ..config import ICFormerConfig
from ..data.sources import sha256_file
from ..llm import load_llm
from ..reader import ADAPTER_DIR
from .config import ArchitectureConfig, TrainConfig
from .invented import NamePieces, invent_names
from .objectives import (
    InstructExample,
    autoencoding_loss,
    instruct_loss,
    lm_loss,
    text_instruct_loss,
    tokenize_instruct_batch,
)
from .readout import ReadoutHead
from .sampling import SpanSampler

AE, LM, INSTRUCT = "ae", "lm", "instruct"
TEXT_ADAPTER_DIR = "text_reader_adapter"  # the full-text reader baseline's adapter, beside its release
READOUT_FILE = "readout.safetensors"  # the training-only readout head, beside a resume or release checkpoint


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def step_plan(cfg: TrainConfig, step: int) -> tuple[str, int, np.random.Generator]:
    """Objective and window length of a step, and its data RNG: identical on every rank and every rerun."""
    rng = np.random.default_rng([cfg.seed, step])
    u = rng.random()
    kind = AE if u < cfg.ae_fraction else INSTRUCT if u < cfg.ae_fraction + cfg.instruct_fraction else LM
    length = int(rng.choice(cfg.window_lengths, p=np.asarray(cfg.window_weights) / sum(cfg.window_weights)))
    return kind, length, rng


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def decoder_blocks(llm: Any) -> list[torch.nn.Module]:
    """The repeated blocks of a causal LM's decoder: the model's `_no_split_modules` types, else
    `decoder.layers`. These are the units that FSDP shards and that `compile_llm` compiles."""
    decoder = llm.get_decoder()
    block_types = set(getattr(llm, "_no_split_modules", None) or ())
    blocks = [m for m in decoder.modules() if type(m).__name__ in block_types]
    if not blocks:
        blocks = list(getattr(decoder, "layers", ()))
    if not blocks:
        raise ValueError(f"found no decoder blocks in {type(llm).__name__}")
    return blocks


def compile_frozen_llm(llm: Any) -> int:
    """torch.compile each decoder block of the frozen LLM in place (regional compilation); returns how
    many blocks were compiled.

    Why: a training step is ~90% the frozen LLM's forward and backward, and at this LLM's width (576) its
    RMSNorms, RoPE, SiLU-gating and residual adds are separate memory-bound kernels in eager mode; the
    compiler fuses them. Compiling blocks rather than the whole model keeps one small graph that all blocks
    share (their weights are inputs to it), compiles in seconds rather than minutes, and leaves the calls
    the objectives make (`get_decoder()`, `get_output_embeddings()`) unchanged. Each step's batch shares one
    window length, so a few shapes recur: the compiler marks the sequence length dynamic after the first
    change instead of compiling every length. Blocks are compiled before FSDP wraps them, as torch's own
    FSDP2 recipes do.
    """
    blocks = decoder_blocks(llm)
    for block in blocks:
        block.compile()
    return len(blocks)


def shard_frozen_llm(llm: Any, device: torch.device) -> None:
    """Shard a frozen causal LM in place across the default process group with FSDP2 (`fully_shard`).

    Units: each decoder block (the model's `_no_split_modules`, else `decoder.layers`), the decoder stack
    itself (what is left of it: the final norm) and the LM head when it is not tied to the input embeddings.
    The trainer calls `llm.get_decoder()` and `llm.get_output_embeddings()` directly, never `llm.forward`, so
    these are the modules that must carry FSDP's all-gather hooks; a `fully_shard` on the top-level model
    would leave the parameters it owns sharded when they are used.

    The input-embedding table is left out (`ignored_params`) and replicated as a plain tensor on every rank:
    the compressor and the objectives look tokens up in it outside any FSDP forward, the LLM signature
    hashes it, and ContextCompressor keeps the module. A tied LM head shares that table and stays
    replicated too. Everything else of the model is left as a DTensor shard on `device` (1/world of it), and
    is all-gathered one block at a time in forward and again in backward (`reshard_after_forward`), where
    gradients flow through the frozen blocks to the digests; no parameter needs a gradient, so FSDP never
    reduce-scatters. Call it on every rank, after `requires_grad_(False)`. The LLM may sit on the CPU:
    fully_shard moves each shard to `device`, so a GPU never holds more than its share of the blocks.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    if any(p.requires_grad for p in llm.parameters()):
        raise ValueError("shard_frozen_llm expects a frozen LLM (requires_grad_(False))")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    decoder = llm.get_decoder()
    embed = llm.get_input_embeddings()
    keep = {embed.weight}  # replicated; also the LM head's weight when the two are tied
    for block in reversed(decoder_blocks(llm)):  # bottom-up, as fully_shard requires
        fully_shard(block, mesh=mesh, ignored_params=keep)
    fully_shard(decoder, mesh=mesh, ignored_params=keep)
    head = llm.get_output_embeddings()
    if head is not None and any(p not in keep for p in head.parameters()):
        fully_shard(head, mesh=mesh, ignored_params=keep)
    # What FSDP did not take (the embedding table, buffers outside the sharded modules) goes to the device.
    with torch.no_grad():
        for tensor in (*llm.parameters(), *llm.buffers()):
            if not isinstance(tensor, DTensor) and tensor.device != device:
                tensor.data = tensor.data.to(device)


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and trains the compressor."""

    def __init__(self, cfg: TrainConfig, llm: Any = None, tokenizer: Any = None) -> None:
        self.cfg = cfg
        # An architecture flag shapes a new compressor: one that the checkpoint contradicts is refused (before the
        # LLM loads), not ignored.
        resume_dir = Path(cfg.out_dir) / "resume"
        resumed = ICFormerConfig.load(resume_dir) if cfg.resume and (resume_dir / "state.json").is_file() else None
        if cfg.init_from:
            cfg.architecture.check_fits(ICFormerConfig.load(cfg.init_from), f"init_from {cfg.init_from}")
        elif resumed is not None:
            cfg.architecture.check_fits(resumed, f"resume {resume_dir}", extend_context=False)
        want_cuda = cfg.device is None and torch.cuda.is_available() or (cfg.device or "").startswith("cuda")
        self.dist = init_distributed("cuda" if want_cuda else "cpu")
        device = cfg.device
        if want_cuda and self.dist.world > 1:
            device = f"cuda:{self.dist.local_rank}"
            torch.cuda.set_device(device)
        self.fsdp = cfg.fsdp and self.dist.world > 1
        if llm is None:
            # A sharded LLM is read on the CPU, and fully_shard moves each rank's shard to its GPU.
            where = "cpu" if self.fsdp else device
            llm, tokenizer = load_llm(cfg.llm, device=where, dtype=cfg.dtype if want_cuda else "float32")
        llm.requires_grad_(False).eval()
        if cfg.kl_teacher:  # before the reader: loading an adapter switches every adapter off
            reader.load_reader(llm, cfg.kl_teacher, name=reader.TEACHER)
        self.reader_params = self._setup_reader(llm)
        if cfg.compile_llm:
            compile_frozen_llm(llm)
        if self.fsdp:
            shard_frozen_llm(llm, torch.device(device or llm.get_input_embeddings().weight.device))
        self.llm, self.tokenizer = llm, tokenizer
        self.device = llm.get_input_embeddings().weight.device
        torch.manual_seed(cfg.seed)

        arch = cfg.architecture
        if cfg.init_from:
            comp = ContextCompressor.from_pretrained(
                cfg.init_from,
                llm,
                tokenizer,
                dtype=torch.float32,
                load_reader=False,  # _setup_reader did
                context_layers=arch.context_layers,  # None: the checkpoint's; more: added, zero-initialised
                num_digest_tokens=arch.num_digest_tokens,  # None: the checkpoint's; a multiple: widened
            )
        else:
            if resumed is not None:  # the flags left out take the resumed run's values
                arch = ArchitectureConfig.of(resumed)
            shape = arch.chosen()  # the rest: ICFormerConfig's defaults
            if "encoder_rank" in shape:
                shape["encoder_alpha"] = 2 * shape["encoder_rank"]
            comp = ContextCompressor.from_llm(llm, tokenizer, seed=cfg.seed, dtype=torch.float32, **shape)
        # From here on the config holds the architecture actually trained (train_config.json, train_info.json); its
        # checks run again against it (window_lengths within the checkpoint's window, an 'llm' encoder without fsdp).
        self.cfg = cfg = replace(cfg, architecture=ArchitectureConfig.of(comp.config))
        if resumed is not None:  # e.g. init_from with more context layers than the resumed run had
            cfg.architecture.check_fits(resumed, f"resume {resume_dir}", extend_context=False)
        comp.reader_name = reader.READER if self.reader_params or self.reader_frozen else None
        self.compressor = comp
        # fp32 master weights; the full-text reader baseline (instruct_context 'text') never runs the compressor.
        self.model = comp.model.train().requires_grad_(cfg.instruct_context == "digests")
        self.readout: ReadoutHead | None = None
        if cfg.readout_weight > 0:
            head = ReadoutHead(comp.config.hidden_size, comp.config.ratio, row_fraction=cfg.readout_fraction)
            self.readout = head.to(self.device)
            if cfg.init_from:
                self._load_readout(Path(cfg.init_from))
        self.forward_model: Any = self.model
        if cfg.compile:
            self.forward_model = torch.compile(self.model)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DDP(self.forward_model, device_ids=ids)
        self.optimizer = self._optimizer()
        self.step = 0
        self.elapsed = 0.0  # seconds of training over all resumed runs
        self.tokens_seen = 0
        self.out = Path(cfg.out_dir)
        self.rewarm_from: int | None = None  # step where a fresh optimizer warms up again
        self.sampler = SpanSampler(cfg.data_dir, "train") if cfg.instruct_fraction < 1 else None
        self.name_pieces = NamePieces.of(tokenizer) if cfg.ae_invent > 0 else None
        self.instruct = self._load_instruct() if cfg.instruct_fraction > 0 else []
        if resumed is not None:
            self.load_resume(resume_dir)
        elif cfg.init_from and cfg.continue_step and (Path(cfg.init_from) / "train_info.json").is_file():
            # Across machines only the released weights travel: keep the schedule and counters going, with a
            # fresh AdamW (its moments re-estimate within the first few dozen steps).
            info = json.loads((Path(cfg.init_from) / "train_info.json").read_text())
            self.step = int(info.get("step", 0))
            self.elapsed = float(info.get("gpu_seconds", 0.0))
            self.tokens_seen = int(info.get("tokens_seen", 0))
            self.rewarm_from = self.step

    # ------------------------------------------------------------------------------------------- setup
    def _setup_reader(self, llm: Any) -> list[torch.nn.Parameter]:
        """The reader adapter's trainable parameters (fp32), injected into the LLM and switched on for the whole
        run: every training prompt holds digests (or, for the full-text reader baseline, is that reader's).
        An adapter beside `init_from`, or in `reader_from`, is continued; with reader_rank 0 it is kept frozen, still
        switched on."""
        cfg = self.cfg
        self.reader_frozen = False
        saved = Path(cfg.init_from) / ADAPTER_DIR if cfg.init_from else None
        if cfg.reader_from:
            if saved is not None and saved.is_dir():
                raise ValueError(f"reader_from given, but {cfg.init_from} has its own reader adapter to continue")
            saved = Path(cfg.reader_from)
            if not (saved / reader.ADAPTER_CONFIG).is_file():
                raise FileNotFoundError(f"reader_from {saved}: no {reader.ADAPTER_CONFIG} there")
        if saved is not None and saved.is_dir():
            reader.load_reader(llm, saved, dtype=torch.float32 if cfg.reader_rank else None)
            params = reader.adapter_parameters(llm) if cfg.reader_rank else []
            self.reader_frozen = not cfg.reader_rank
        elif cfg.reader_rank:
            params = reader.add_reader(
                llm, reader.ReaderConfig(r=cfg.reader_rank, alpha=cfg.reader_alpha), seed=cfg.seed
            )
        else:
            return []
        if cfg.fsdp:
            raise ValueError("a reader adapter with fsdp is not supported")
        reader.set_enabled(llm, True)
        for p in params:
            p.data = p.data.float()
            p.requires_grad_(True)
        return params

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The compressor's parameters (unless frozen), the readout head's, the reader adapter's (this order indexes
        the optimizer state)."""
        model = [p for p in self.model.parameters() if p.requires_grad]
        head = list(self.readout.parameters()) if self.readout is not None else []
        return [*model, *head, *self.reader_params]

    def _optimizer(self) -> torch.optim.Optimizer:
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self.readout is not None:
            named += [(f"readout.{n}", p) for n, p in self.readout.named_parameters()]
        # An LLM encoder's LoRA tensors (model.lora.N) train as the reader's do: LoRA rate, no decay.
        lora = [p for n, p in named if n.startswith("lora.")]
        named = [(n, p) for n, p in named if not n.startswith("lora.")]
        decay = [p for n, p in named if p.dim() == 2 and "embeddings" not in n]
        other = [p for n, p in named if not (p.dim() == 2 and "embeddings" not in n)]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
        groups.append({"params": lora, "weight_decay": 0.0, "reader": True})
        groups.append({"params": self.reader_params, "weight_decay": 0.0, "reader": True})
        groups = [g for g in groups if g["params"]]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95), fused=fused)

    def _load_instruct(self) -> list[InstructExample]:
        path = Path(self.cfg.instruct_file or "")
        if not path.is_file():
            raise FileNotFoundError(f"instruct_file {path} not found")
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("answer")]
        if not records:
            raise ValueError(f"{path} holds no records with answers")
        return tokenize_instruct_batch(
            self.tokenizer,
            [r["contexts"] if "contexts" in r else r["context"] for r in records],  # several: multi-document
            [r["prompt"] for r in records],
            [r["answer"] for r in records],
            # The full-text prompts the KL teacher, or the full-text reader baseline, reads.
            teacher=self.cfg.kl_weight > 0 or self.cfg.instruct_context == "text",
        )

    # ------------------------------------------------------------------------------------------- steps
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def micro_loss(self, kind: str, length: int, rng: np.random.Generator, micro: int) -> Any:
        """Loss of one micro-batch of this rank."""
        model = self.forward_model
        if kind == INSTRUCT:
            pick = rng.choice(len(self.instruct), size=micro)
            if self.cfg.instruct_context == "text":
                return text_instruct_loss(self.llm, [self.instruct[i] for i in pick])
            return instruct_loss(
                model,
                self.llm,
                [self.instruct[i] for i in pick],
                kl_weight=self.cfg.kl_weight,
                teacher_adapter=reader.TEACHER if self.cfg.kl_teacher else None,
            )
        cont = self.cfg.lm_tokens if kind == LM else 0
        assert self.sampler is not None  # built whenever a step is not all instruction records
        drawn = self.sampler.sample(rng, micro, length, cont)
        if kind == AE and self.name_pieces is not None:
            drawn = invent_names(drawn, rng, self.cfg.ae_invent, self.name_pieces)
        spans = torch.from_numpy(drawn).to(self.device)
        if kind == AE:
            return autoencoding_loss(model, self.llm, spans, self.readout)
        return lm_loss(model, self.llm, spans[:, :length], spans[:, length:], readout=self.readout)

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        kind, length, rng = step_plan(cfg, self.step)
        # Every rank draws the step's plan from the same RNG, then its own micro-batches.
        rank_rng = np.random.default_rng([cfg.seed, self.step, 1 + self.dist.rank])
        micro = cfg.batch_size // cfg.grad_accum // self.dist.world
        if micro < 1:
            raise ValueError("batch_size is smaller than grad_accum x world size")
        lr = lr_at(self.step, cfg)
        if self.rewarm_from is not None:
            lr *= min(1.0, (self.step - self.rewarm_from + 1) / cfg.warmup_steps)
        warm = 1.0
        if self.rewarm_from is not None or self.step < cfg.warmup_steps:
            warm = min(1.0, (self.step - (self.rewarm_from or 0) + 1) / cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            # The reader adapter: its own peak rate (LoRA wants ~1e-4), warmed up with the run, then constant.
            group["lr"] = cfg.reader_lr * warm if group.get("reader") else lr
        total, tokens, correct = 0.0, 0, 0
        readout_total, readout_tokens, readout_correct = 0.0, 0, 0
        kl_total: float | None = None
        for i in range(cfg.grad_accum):
            sync = i == cfg.grad_accum - 1 or self.dist.world == 1
            ctx = self.forward_model.no_sync() if not sync and hasattr(self.forward_model, "no_sync") else nullcontext()
            with ctx, self._autocast():
                out = self.micro_loss(kind, length, rank_rng, micro)
            loss = out.loss
            if out.readout is not None:
                loss = loss + cfg.readout_weight * out.readout.loss
                readout_total += out.readout.loss.item() / cfg.grad_accum
                readout_tokens += out.readout.num_tokens
                readout_correct += out.readout.correct
            (loss / cfg.grad_accum).backward()
            # Log the cross-entropy (`loss` may include kl_weight * kl), comparable with runs without the KL.
            total += (out.ce if out.ce is not None else out.loss).item() / cfg.grad_accum
            if out.kl is not None:
                kl_total = (kl_total or 0.0) + out.kl.item() / cfg.grad_accum
            tokens += out.num_tokens
            correct += out.correct
        self._average_readout_grads()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters(), cfg.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += tokens * self.dist.world
        record = {
            "step": self.step,
            "kind": kind,
            "length": length,
            "loss": total,  # the LLM's cross-entropy only, comparable with runs without the readout head or KL
            "acc": correct / max(1, tokens),
            "lr": lr,
            "grad_norm": float(grad_norm),
        }
        if readout_tokens:
            record.update(readout_loss=readout_total, readout_acc=readout_correct / readout_tokens)
        if kl_total is not None:
            record["kl"] = kl_total  # KL(full-text teacher || digest student) per answer token
        return record

    def _average_readout_grads(self) -> None:
        """The readout head is not inside DDP (it only runs on some steps): average its gradients by hand.
        Every rank runs the same objective each step, so all ranks have gradients or none do."""
        if self.readout is None or self.dist.world == 1:
            return
        for p in self.readout.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    def train(self) -> dict[str, Any]:
        """Train until stop_at_step / max_steps / max_minutes, checkpointing along the way."""
        cfg = self.cfg
        last = min(cfg.stop_at_step or cfg.max_steps, cfg.max_steps)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        bar = tqdm(total=last, initial=self.step, desc="training", disable=not (cfg.progress and self.dist.main))
        start, run_start, window = time.time(), time.time(), []
        tokens_at_start = self.tokens_seen
        record: dict[str, Any] = {}
        while self.step < last:
            record = self.train_step()
            window.append(record)
            bar.update(1)
            now = time.time()
            self.elapsed += now - start
            start = now
            if self.step % cfg.log_every == 0 or self.step == last:
                window[-1]["target_tok_per_s"] = round((self.tokens_seen - tokens_at_start) / (now - run_start))
                self._log(window)
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['acc']:.3f}")
                window = []
            if self.step % cfg.save_every == 0:
                self.save_resume()
            if cfg.max_minutes is not None and now - run_start > cfg.max_minutes * 60:
                break
        bar.close()
        if window:
            self._log(window)
        self.save_resume()
        self.save_release()
        return record

    def _log(self, records: list[dict[str, Any]]) -> None:
        if not self.dist.main or not records:
            return
        line = dict(records[-1])
        for kind in (AE, LM, INSTRUCT):
            losses = [r["loss"] for r in records if r["kind"] == kind]
            if losses:
                line[f"{kind}_loss"] = sum(losses) / len(losses)
                line[f"{kind}_acc"] = sum(r["acc"] for r in records if r["kind"] == kind) / len(losses)
        readouts = [r for r in records if "readout_loss" in r]
        if readouts:
            line["readout_loss"] = sum(r["readout_loss"] for r in readouts) / len(readouts)
            line["readout_acc"] = sum(r["readout_acc"] for r in readouts) / len(readouts)
        kls = [r["kl"] for r in records if "kl" in r]
        if kls:
            line["kl"] = sum(kls) / len(kls)
        line.update(elapsed_s=round(self.elapsed, 1), tokens_seen=self.tokens_seen)
        if torch.cuda.is_available() and self.device.type == "cuda":
            line["max_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    # ------------------------------------------------------------------------------------- checkpoints
    def save_resume(self) -> None:
        """Weights (fp32), AdamW state, step and RNG state: what exact resume needs. Written atomically."""
        if self.dist.world > 1:
            dist.barrier()
        if not self.dist.main:
            return
        target = self.out / "resume"
        tmp = self.out / "resume.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.compressor.config.save(tmp)
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in self.model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        self._save_readout(tmp)
        if self.reader_params:
            reader.save_reader(self.llm, tmp / ADAPTER_DIR)  # fp32, as it trains
        opt_tensors: dict[str, torch.Tensor] = {}
        for i, p in enumerate(self.trained_parameters()):
            for key, value in self.optimizer.state.get(p, {}).items():
                opt_tensors[f"{i}.{key}"] = value.detach().float().cpu().contiguous().reshape(value.shape)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "step": self.step,
            "rewarm_from": self.rewarm_from,
            "elapsed_s": self.elapsed,
            "tokens_seen": self.tokens_seen,
            "config": self.cfg.to_dict(),
            "torch_rng": torch.get_rng_state().tolist(),
        }
        (tmp / "state.json").write_text(json.dumps(state) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    def load_resume(self, path: Path) -> None:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"), device=str(self.device))
        self.model.load_state_dict(weights, strict=True)
        self._load_readout(path)
        if self.reader_params:
            reader.load_reader(self.llm, path / ADAPTER_DIR, into_existing=True, dtype=torch.float32)
            reader.set_enabled(self.llm, True)
            for p in self.reader_params:
                p.requires_grad_(True)
            # peft's switches mark every adapter they turn off as frozen, an LLM encoder's too: it trains on.
            self.model.requires_grad_(self.cfg.instruct_context == "digests")
        opt = load_file(str(path / "optimizer.safetensors"), device=str(self.device))
        for i, p in enumerate(self.trained_parameters()):
            entries = {k.split(".", 1)[1]: v for k, v in opt.items() if k.split(".", 1)[0] == str(i)}
            if entries:
                if "step" in entries and not self.optimizer.param_groups[0].get("fused"):
                    entries["step"] = entries["step"].cpu()
                self.optimizer.state[p] = entries
        self.step = int(state["step"])
        self.rewarm_from = state.get("rewarm_from")
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))

    def save_release(self) -> Path | None:
        """The compressor in bf16 (config.json + model.safetensors) with a record of how it was trained."""
        if not self.dist.main:
            return None
        self.compressor.refresh_fingerprint()
        path = self.compressor.save_pretrained(self.out / "release", dtype=torch.bfloat16)
        self._save_readout(path)  # so that a run continued elsewhere from this release keeps its head
        if self.cfg.instruct_context == "text":
            # The full-text reader baseline is no digest reader: kept apart so that loading this folder as a
            # compressor checkpoint never reads digests through it (`icformer-rag eval --text-adapter` takes it).
            reader.save_reader(self.llm, path / TEXT_ADAPTER_DIR, dtype=torch.bfloat16)
        elif self.reader_params or self.reader_frozen:
            reader.save_reader(self.llm, path / ADAPTER_DIR, dtype=torch.bfloat16)
        # The fingerprint must describe the weights as saved (bf16), which is what users load.
        info = {
            "step": self.step,
            "gpu_seconds": round(self.elapsed, 1),
            "tokens_seen": self.tokens_seen,
            "config": self.cfg.to_dict(),
            "device": str(self.device),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
        }
        manifest = Path(self.cfg.data_dir) / "manifest.json"
        if manifest.is_file():
            info["data_manifest_sha256"] = sha256_file(manifest)
        if self.cfg.instruct_file and Path(self.cfg.instruct_file).is_file():
            # The corpus manifest does not cover the instruction records, which `data build` flags change.
            info["instruct_file_sha256"] = sha256_file(Path(self.cfg.instruct_file))
        (path / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
        return path

    def _load_readout(self, directory: Path) -> None:
        """The readout head saved beside a checkpoint, if there is one and this run uses a head (a release
        keeps it in bf16; the head trains in fp32)."""
        if self.readout is not None and (directory / READOUT_FILE).is_file():
            saved = load_file(str(directory / READOUT_FILE), device=str(self.device))
            shapes = {k: tuple(v.shape) for k, v in self.readout.state_dict().items()}
            if {k: tuple(v.shape) for k, v in saved.items()} != shapes:
                # A widened compressor has fewer tokens per digest: the head has as many slots, so it starts anew.
                warnings.warn(
                    f"the readout head in {directory} has another number of slots per digest: a new one", stacklevel=2
                )
                return
            self.readout.load_state_dict({k: v.float() for k, v in saved.items()})

    def _save_readout(self, directory: Path) -> None:
        if self.readout is not None:
            weights = {k: v.detach().float().cpu().contiguous() for k, v in self.readout.state_dict().items()}
            save_file(weights, str(directory / READOUT_FILE))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training job; returns the last step's metrics."""
    trainer = Trainer(cfg)
    try:
        return trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
