"""ContextCompressor: texts -> digests, with the frozen LLM's tokenizer and embedding table and an ICFormer."""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import CONFIG_NAME, REMOVED_CONFIG_FIELDS, WEIGHTS_NAME, ICFormerConfig, LLMSignature
from .digest import Digest, content_hash
from .llm import resolve_device, resolve_dtype
from .modeling import ICFormer
from .reader import ADAPTER_DIR
from .windows import documents_to_windows, plan_batches

if TYPE_CHECKING:
    from .llm_encoder import LLMEncoder

# The compressor modules: the IC-Former, or the LLM itself as the encoder (config.encoder == "llm").
Encoder: TypeAlias = "ICFormer | LLMEncoder"

# Checkpoints that install with the package, by the LLM they serve.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
DEFAULT_CHECKPOINT = SHIPPED_CHECKPOINTS / "smollm2-135m-instruct"

_ENCODER_FIELDS = ("encoder", "encoder_rank", "encoder_alpha")
_PROBE_ROWS = 32
_PROBE_COLS = 8
FINGERPRINT_NAME = "fingerprint.txt"
# Weight dtypes a checkpoint may hold (safetensors' names): an integer or bool tensor would be cast silently.
_WEIGHT_DTYPES = ("F16", "BF16", "F32", "F64")


def llm_signature(llm: Any, name: str | None = None) -> LLMSignature:
    """Signature of a causal LM's input-embedding table (see :class:`LLMSignature`)."""
    table = llm.get_input_embeddings().weight
    vocab, hidden = table.shape
    rows = [(i * 7919) % vocab for i in range(1, _PROBE_ROWS + 1)]
    cols = [(j * 104729) % hidden for j in range(1, _PROBE_COLS + 1)]
    probe = table.detach()[rows][:, cols].float().cpu().flatten().tolist()
    as_bf16 = table.detach().to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy()
    digest = hashlib.sha256(as_bf16.tobytes()).hexdigest()
    name = name or getattr(llm, "name_or_path", "") or getattr(llm.config, "_name_or_path", "")
    return LLMSignature(
        name=str(name),
        hidden_size=hidden,
        vocab_size=vocab,
        embedding_sha256=digest,
        embedding_probe=[round(v, 6) for v in probe],
    )


def fingerprint_of(config: ICFormerConfig, state: dict[str, torch.Tensor]) -> str:
    """Hash of a compressor's config and weights. Weights are hashed as bf16, so the same checkpoint loaded in fp32
    or bf16 gives the same fingerprint (and shares cached digests)."""
    # Options removed since, at their off value, stay in the hashed dict: every checkpoint's config was hashed with
    # them, so its fingerprint (and the digests cached under it) stays what it was.
    data = {**REMOVED_CONFIG_FIELDS, **config.to_dict()}
    if data.get("encoder") == "icformer":
        # Fields added for other encoders, at their defaults, leave an IC-Former's identity as it was before they
        # existed: checkpoints written earlier recompute to the fingerprint they were saved with.
        for key in _ENCODER_FIELDS:
            data.pop(key, None)
    h = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


class _ShapesOnly(ICFormer):
    """An ICFormer that skips its initialisation: built on the meta device, it gives the exact parameter names and
    shapes of a config without allocating (and without meta-device random init, whose first call costs seconds)."""

    def reset_parameters(self, embedding_rms: float = 0.02) -> None:
        pass


def expected_weight_shapes(config: ICFormerConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors an IC-Former checkpoint of `config` holds, computed without allocating.
    (An LLM encoder's adapter tensors depend on the LLM: only its own tensors are listed for it.)"""
    if config.encoder == "llm":
        c = config.hidden_size
        return {
            "digest_embeddings": (config.num_digest_tokens, c),
            "special_embeddings": (config.num_special_tokens, c),
            "proj.weight": (c, c),
            "norm.weight": (c,),
        }
    with torch.device("meta"):
        model = _ShapesOnly(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_weights(path: Path, config: ICFormerConfig) -> None:
    """Raise ValueError unless the weights file in `path` holds exactly the floating tensors `config` describes.

    Reads only the safetensors header (names, dtypes, shapes), so a config that does not fit its weights
    (`num_blocks: 5` beside 3 blocks of weights, a wrong `intermediate_size`) is refused before anything is
    allocated, with the tensors that differ named, instead of a size mismatch from inside torch.
    """
    from safetensors import safe_open

    file = path / WEIGHTS_NAME
    try:
        with safe_open(str(file), framework="pt") as f:
            found = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a damaged or foreign file
        raise ValueError(f"{file} is not a readable safetensors file: {err}") from err
    bad_dtypes = sorted(f"{k} ({d})" for k, (d, _) in found.items() if d not in _WEIGHT_DTYPES)
    if bad_dtypes:
        raise ValueError(f"{file}: weights must be floating point, got {', '.join(bad_dtypes[:5])}")
    want = expected_weight_shapes(config)
    problems: list[str] = []
    missing = sorted(set(want) - set(found))
    if missing:
        problems.append(f"missing {len(missing)} tensors ({_few(missing)})")
    if config.encoder == "llm":
        # The adapter's LoRA tensors, `lora.<i>`, are (rank, in) or (out, rank): their count and other sides
        # depend on the LLM and are checked by load_state_dict once the adapter exists.
        extra = sorted(k for k in set(found) - set(want) if not k.startswith("lora."))
        problems += [
            f"{k} is {list(shape)}, not a rank-{config.encoder_rank} LoRA matrix"
            for k, (_, shape) in sorted(found.items())
            if k.startswith("lora.") and (len(shape) != 2 or config.encoder_rank not in shape)
        ][:4]
    else:
        extra = sorted(set(found) - set(want))
    if extra:
        problems.append(f"unexpected {len(extra)} tensors ({_few(extra)})")
    problems += [
        f"{k} is {list(found[k][1])}, the config gives {list(shape)}"
        for k, shape in sorted(want.items())
        if k in found and found[k][1] != shape
    ][:4]
    if problems:
        raise ValueError(f"{file} does not fit {path / CONFIG_NAME}: " + "; ".join(problems))


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def check_fingerprint(path: Path, computed: str) -> None:
    """Raise ValueError if a fingerprint stored with the checkpoint in `path` (``fingerprint.txt``, the weights
    file's metadata) differs from `computed`, the one its config and weights give. A checkpoint whose weights or
    config changed after saving would otherwise share (and write) digests under another compressor's name."""
    from safetensors import safe_open

    stored: list[tuple[str, str]] = []
    if (path / FINGERPRINT_NAME).is_file():
        stored.append((FINGERPRINT_NAME, (path / FINGERPRINT_NAME).read_text().strip()))
    with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
        meta = f.metadata() or {}
    if "fingerprint" in meta:
        stored.append((f"{WEIGHTS_NAME} metadata", meta["fingerprint"]))
    for where, value in stored:
        if value != computed:
            raise ValueError(
                f"compressor checkpoint {path}: the stored fingerprint {value!r} ({where}) does not match "
                f"{computed!r}, which its config and weights give: the checkpoint was changed after it was saved. "
                f"Save it again with save_pretrained (or delete {FINGERPRINT_NAME} if the change is meant)."
            )


def build_model(config: ICFormerConfig, llm: Any, adapter_name: str | None = None, seed: int | None = 0) -> Encoder:
    """The compressor module `config.encoder` names: an :class:`ICFormer`, or an :class:`LLMEncoder` over `llm`
    (which then holds its adapter, named `adapter_name`)."""
    if config.encoder == "llm":
        from .llm_encoder import LLMEncoder

        return LLMEncoder(config, llm, adapter_name=adapter_name, seed=seed)
    return ICFormer(config)


def default_checkpoint() -> Path | None:
    """The checkpoint shipped for the default LLM, if this install has one."""
    return DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / WEIGHTS_NAME).is_file() else None


def _widened(path: Path, config: ICFormerConfig, state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """`state` of the IC-Former checkpoint at `path` with each of its digest queries repeated k / have times (see
    :meth:`ContextCompressor.from_pretrained`'s `num_digest_tokens`)."""
    have = config.num_digest_tokens
    if config.encoder != "icformer":
        raise ValueError(f"{path} is an {config.encoder!r} encoder: only an IC-Former's digests can be widened")
    if k < have or k % have or config.window_tokens % k:
        raise ValueError(
            f"{path} has {have} digests per {config.window_tokens}-token window: it can only be widened to a "
            f"multiple of {have} that divides the window, not {k}"
        )
    if config.digest_positions != "spread":
        raise ValueError(f"{path} places digests {config.digest_positions!r}: widening needs 'spread' positions")
    state = dict(state)
    state["digest_embeddings"] = state["digest_embeddings"].repeat_interleave(k // have, dim=0)
    return state


class ContextCompressor:
    """Compresses documents into :class:`Digest` objects for one frozen LLM.

    Holds the LLM's tokenizer and input-embedding table (shared, not copied) and an :class:`ICFormer` (or, for a
    checkpoint with ``encoder: "llm"``, an :class:`~icformer_rag.llm_encoder.LLMEncoder` that runs the LLM).
    All windows of all documents of a call go through padded batches of at most `max_batch_tokens`.

    Example:
        >>> llm, tok = load_llm()
        >>> compressor = ContextCompressor.from_pretrained(None, llm, tok)
        >>> digests = compressor.compress(["The town of Velmora was founded in 1723 ..."])
    """

    def __init__(
        self,
        model: Encoder,
        embed_tokens: nn.Embedding,
        tokenizer: Any,
        *,
        max_batch_tokens: int = 64 * 512,
        fingerprint: str | None = None,
    ) -> None:
        if embed_tokens.embedding_dim != model.config.hidden_size:
            raise ValueError(
                f"the LLM's embeddings are {embed_tokens.embedding_dim} wide but the compressor expects "
                f"{model.config.hidden_size}"
            )
        if max_batch_tokens < model.config.window_tokens:
            raise ValueError(f"max_batch_tokens must be at least one window ({model.config.window_tokens})")
        self.model = model.eval()
        self.embed_tokens = embed_tokens
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self._fingerprint = fingerprint or self.compute_fingerprint()
        self._compiled: Any = None  # set by compile(): embeddings + IC-Former on fixed shapes
        # The adapters compress from worker threads; a compiled function's CUDA graphs share static buffers, so
        # compiled calls run one at a time (the GPU would serialize them anyway).
        self._compiled_lock = threading.Lock()
        # The name of this compressor's reader adapter inside the LLM (see icformer_rag.reader), or None: SoftPromptLM
        # switches it on for prompts that hold digests. Set when a checkpoint with one loads, or by the trainer.
        self.reader_name: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to ship it to Ray actors, :mod:`icformer_rag.indexing`) without its lock. A compiled one is refused:
        a compiled function does not pickle (pickle the compressor before :meth:`compile`)."""
        if self._compiled is not None:
            raise TypeError("a compiled ContextCompressor does not pickle: pickle it before compile()")
        state = dict(self.__dict__)
        del state["_compiled_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compiled_lock = threading.Lock()

    @property
    def has_reader(self) -> bool:
        """Whether digests of this compressor are read through a reader adapter."""
        return self.reader_name is not None

    @property
    def config(self) -> ICFormerConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.digest_embeddings.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.digest_embeddings.dtype

    @property
    def fingerprint(self) -> str:
        """Identifies these weights: digests are only reusable by the compressor (and LLM) that made them."""
        return self._fingerprint

    def compute_fingerprint(self) -> str:
        """Hash of config and weights (see :func:`fingerprint_of`)."""
        return fingerprint_of(self.config, self.model.state_dict())

    def refresh_fingerprint(self) -> str:
        """Recompute the fingerprint after the weights changed (training)."""
        self._fingerprint = self.compute_fingerprint()
        return self._fingerprint

    @property
    def compiled(self) -> bool:
        """Whether :meth:`compile` is in effect."""
        return self._compiled is not None

    def compile(self, mode: str | None = None, **compile_kwargs: Any) -> ContextCompressor:
        """Compress through ``torch.compile`` (and, on CUDA, CUDA graphs): for query-time compression on a GPU,
        where one eager call is bound by kernel launches rather than arithmetic.

        Shapes are fixed so that each compiles once: every window is padded to `window_tokens`, every window
        gets all `num_digest_tokens` digests (causality among digests keeps the first m of them the same, so
        the result equals the eager one up to rounding), and batches are padded to a power of two windows.
        The first call at each batch size compiles (seconds to a minute); later calls replay.

        Args:
            mode: ``torch.compile`` mode; default ``"reduce-overhead"`` (CUDA graphs) on CUDA, else
                ``"default"``.
            **compile_kwargs: passed to ``torch.compile`` (e.g. ``backend``).
        Returns:
            self, for chaining: ``ContextCompressor.from_pretrained(None, llm, tok).compile()``.
        """
        if self.config.encoder != "icformer":
            raise ValueError(f"compile() is for the IC-Former; this compressor's encoder is {self.config.encoder!r}")
        if mode is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        model, embed = self.model, self.embed_tokens

        def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return model(embed(ids), mask)

        self._compiled = torch.compile(forward, mode=mode, dynamic=False, **compile_kwargs)
        return self

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_llm(
        cls,
        llm: Any,
        tokenizer: Any,
        config: ICFormerConfig | None = None,
        *,
        seed: int | None = 0,
        dtype: str | torch.dtype | None = None,
        max_batch_tokens: int = 64 * 512,
        **config_overrides: Any,
    ) -> ContextCompressor:
        """A freshly initialised (untrained) compressor shaped for `llm`."""
        embed = llm.get_input_embeddings()
        signature = llm_signature(llm)
        if config is None:
            config = ICFormerConfig.for_llm(llm.config, llm=signature, **config_overrides)
        else:
            if config_overrides:
                raise ValueError("pass either a config or config overrides, not both")
            config.llm = signature
        if config.hidden_size != embed.embedding_dim:
            raise ValueError(f"config.hidden_size {config.hidden_size} != the LLM's {embed.embedding_dim}")
        # Seed a local generator so that building a compressor never disturbs the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = build_model(config, llm, seed=seed)
            rms = embed.weight.detach().float().pow(2).mean().sqrt().item()
            model.reset_parameters(embedding_rms=rms)
        device = embed.weight.device
        model.to(device=device, dtype=resolve_dtype(dtype, device) if dtype else embed.weight.dtype)
        return cls(model, embed, tokenizer, max_batch_tokens=max_batch_tokens)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None,
        llm: Any,
        tokenizer: Any,
        *,
        dtype: str | torch.dtype | None = None,
        max_batch_tokens: int = 64 * 512,
        allow_untrained: bool = True,
        load_reader: bool = True,
        context_layers: int | None = None,
        num_digest_tokens: int | None = None,
    ) -> ContextCompressor:
        """Load a compressor saved with :meth:`save_pretrained` onto the LLM's device.

        `path=None` takes the checkpoint shipped for the default LLM; when this install has none it
        falls back to an untrained compressor with a warning (untrained digests are noise), unless
        `allow_untrained=False`. Raises ValueError when the checkpoint was trained for another LLM.

        A checkpoint with a reader adapter (``reader_adapter/``) loads it into `llm` (see
        :mod:`icformer_rag.reader`), unless `load_reader` is False (the trainer handles it itself).
        `context_layers` (training) extends a checkpoint with fewer context layers by zero-initialised ones.
        `num_digest_tokens` (training) widens an IC-Former to a multiple f of its digests per window (lower
        compression): each learned digest query becomes f copies, which "spread" positions place around the old
        one (4j+1.5 -> 4j+0.5 and 4j+2.5 at f=2); the blocks do not depend on the number of digests, so the wider
        compressor starts from everything the checkpoint learned.
        """
        if path is None:
            path = default_checkpoint()
            if path is None:
                if not allow_untrained:
                    raise FileNotFoundError("this install ships no trained compressor checkpoint")
                warnings.warn(
                    "no trained compressor checkpoint ships with this install: using an UNTRAINED "
                    "compressor, whose digests are noise",
                    stacklevel=2,
                )
                return cls.from_llm(llm, tokenizer, dtype=dtype, max_batch_tokens=max_batch_tokens)
        path = Path(path)
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
        config = ICFormerConfig.load(path)  # types and ranges are checked here
        given = llm_signature(llm)
        why = config.llm.mismatch(given)
        if why:
            raise ValueError(
                f"compressor checkpoint {path} was trained for the LLM {config.llm.describe()}, but the given "
                f"LLM is {given.describe()}: {why}. Train or load a compressor for this LLM."
            )
        check_weights(path, config)  # before allocating anything
        state = load_file(str(path / WEIGHTS_NAME))
        # The fingerprint names the digests this checkpoint makes in every store: it is recomputed from what was
        # loaded (config with its LLM signature, and weights), never taken on trust from the files (~20 ms).
        fingerprint = fingerprint_of(config, state)
        check_fingerprint(path, fingerprint)
        extend = context_layers is not None and context_layers != config.context_layers
        if extend and config.encoder != "icformer":
            raise ValueError(f"{path} is an {config.encoder!r} encoder: context layers belong to the IC-Former")
        if context_layers is not None and extend:
            if context_layers < config.context_layers:
                raise ValueError(f"{path} has {config.context_layers} context layers; cannot drop to {context_layers}")
            config.context_layers = context_layers
        widen = num_digest_tokens is not None and num_digest_tokens != config.num_digest_tokens
        if num_digest_tokens is not None and widen:
            state = _widened(path, config, state, num_digest_tokens)
            config.num_digest_tokens = num_digest_tokens
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move the caller's RNG
            # An LLM encoder's adapter is named after the weights, so that checkpoints can share one LLM.
            model = build_model(config, llm, adapter_name=f"icformer_encoder_{fingerprint}")
        try:
            result = model.load_state_dict(state, strict=not extend)
        except RuntimeError as err:  # what check_weights cannot see: an LLM encoder's adapter for another LLM
            raise ValueError(f"{path}: weights do not fit the architecture: {err}") from err
        if extend and (result.unexpected_keys or any(not k.startswith("context_layers.") for k in result.missing_keys)):
            raise ValueError(f"{path}: weights do not fit the extended architecture ({result})")
        embed = llm.get_input_embeddings()
        device = embed.weight.device
        model.to(device=device, dtype=resolve_dtype(dtype, device) if dtype else embed.weight.dtype)
        # Extended by new context layers, it is another compressor: its fingerprint is computed from the result.
        comp = cls(
            model,
            embed,
            tokenizer,
            max_batch_tokens=max_batch_tokens,
            fingerprint=None if extend or widen else fingerprint,
        )
        if load_reader and (path / ADAPTER_DIR).is_dir():
            comp._attach_reader(llm, path / ADAPTER_DIR)
        return comp

    def _attach_reader(self, llm: Any, adapter_path: Path) -> None:
        """Load the checkpoint's reader adapter into `llm` under a name of this compressor's own (once: a second
        compressor of the same checkpoint reuses it; other checkpoints' readers can sit beside it), so that
        SoftPromptLM reads this compressor's digests through it."""
        from . import reader

        name = f"{reader.READER}_{self.fingerprint}"
        if not reader.has_adapter(llm, name):
            reader.load_reader(llm, adapter_path, name=name)
        self.reader_name = name

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write `config.json`, `model.safetensors` (only the compressor's weights, never pickle) and
        `fingerprint.txt`.

        The fingerprint written is the one of what is written (config and weights as saved), which is what
        :meth:`from_pretrained` recomputes and checks; a stale in-memory one (weights changed without
        :meth:`refresh_fingerprint`) would otherwise make a checkpoint that refuses to load.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path)
        state = {k: v.detach().to(dtype or v.dtype).cpu().contiguous() for k, v in self.model.state_dict().items()}
        fingerprint = fingerprint_of(self.config, state)
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "fingerprint": fingerprint})
        (path / FINGERPRINT_NAME).write_text(fingerprint + "\n")
        return path

    # ------------------------------------------------------------------------------------- compression
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        texts = _check_texts(texts)
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    @torch.inference_mode()
    def compress(self, texts: Sequence[str], show_progress: bool = False) -> list[Digest]:
        """One :class:`Digest` per text, in order.

        Each text is cut into windows of `window_tokens`; a window of t tokens gets ceil(t / ratio)
        digests. An empty text gives an empty digest; whitespace is text like any other (its tokens are
        compressed, as the full-text baseline would read them). Nothing is truncated.
        """
        texts = _check_texts(texts)
        ids = self.tokenize(texts)
        vectors = self.compress_ids(ids, show_progress=show_progress)
        return [
            Digest(
                embeddings=torch.cat(parts) if parts else self._empty(),
                num_tokens=len(doc_ids),
                content_hash=content_hash(text),
                fingerprint=self.fingerprint,
                window_digests=[p.shape[0] for p in parts],
            )
            for text, doc_ids, parts in zip(texts, ids, vectors, strict=True)
        ]

    @torch.inference_mode()
    def compress_ids(self, docs: Sequence[Sequence[int]], show_progress: bool = False) -> list[list[torch.Tensor]]:
        """Digest vectors per window per document, for token ids."""
        cfg = self.config
        windows = documents_to_windows(docs, cfg.window_tokens)
        per_doc = Counter(w.doc for w in windows)
        out: list[list[torch.Tensor | None]] = [[None] * per_doc[d] for d in range(len(docs))]
        # Compiled, every window is padded to a full window, so the budget counts full windows.
        lengths = [cfg.window_tokens if self.compiled else len(w.ids) for w in windows]
        batches = plan_batches(lengths, self.max_batch_tokens)
        for batch in tqdm(batches, desc="compressing", unit="batch", disable=not show_progress or not batches):
            group = [windows[i] for i in batch]
            digests = self.compress_windows([w.ids for w in group])
            for w, d in zip(group, digests, strict=True):
                out[w.doc][w.index] = d
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def compress_windows(self, windows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Digests of windows of at most `window_tokens` ids each, as one padded batch."""
        cfg = self.config
        if not windows:
            return []
        longest = max(len(w) for w in windows)
        if longest > cfg.window_tokens or min(len(w) for w in windows) < 1:
            raise ValueError(f"windows must hold 1..{cfg.window_tokens} tokens")
        rows, width = len(windows), longest
        if self.compiled:  # fixed shapes: a full window, and a power-of-two batch (extra rows are discarded)
            most = max(len(windows), self.max_batch_tokens // cfg.window_tokens)
            rows, width = min(1 << (len(windows) - 1).bit_length(), most), cfg.window_tokens
        ids = torch.zeros(rows, width, dtype=torch.long)
        mask = torch.zeros(rows, width, dtype=torch.bool)
        for i, w in enumerate(windows):
            ids[i, : len(w)] = torch.as_tensor(w, dtype=torch.long)
            mask[i, : len(w)] = True
        if int(ids.max()) >= self.embed_tokens.num_embeddings or int(ids.min()) < 0:
            # A tokenizer that does not belong to this LLM: say so instead of an IndexError inside torch.
            raise ValueError(
                f"token ids must be in [0, {self.embed_tokens.num_embeddings}) (the LLM's vocabulary), got "
                f"{int(ids.min())}..{int(ids.max())}: is the tokenizer the LLM's own?"
            )
        ids, mask = ids.to(self.device), mask.to(self.device)
        counts = [cfg.digests_for(len(w)) for w in windows]
        if self.compiled:
            with self._compiled_lock:
                digests = self._compiled(ids, mask)  # (rows, k, C); padding rows see only their digests
                # CUDA graphs reuse their output buffers on the next replay: hand out copies.
                return [digests[i, :m].clone() for i, m in enumerate(counts)]
        digests = self.model(self.embed_tokens(ids), mask, num_digests=max(counts))  # (B, M, C)
        return [digests[i, :m] for i, m in enumerate(counts)]

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.config.hidden_size, device=self.device, dtype=self.dtype)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("compress() takes a list of texts, not a single string: wrap it as [text]")
    if not isinstance(texts, Sequence):
        raise TypeError(f"compress() takes a list of texts, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, not a str")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates: the tokenizer would fail with an obscure TypeError
            raise ValueError(f"text {i} is not valid Unicode: {err.reason} at character {err.start}") from err
    return list(texts)


def load_compressor(
    checkpoint: str | Path | None = None,
    llm_name_or_path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[ContextCompressor, Any, Any]:
    """Convenience: load an LLM (default: the embedded SmolLM2) and its compressor. Returns
    (compressor, llm, tokenizer)."""
    from .llm import load_llm

    resolve_device(device)
    llm, tokenizer = load_llm(llm_name_or_path, device=device, dtype=dtype)
    if checkpoint is None and llm_name_or_path is not None:
        # Another path to the default LLM (its converted folder, say) may use the shipped checkpoint: the
        # embedding signature, not the name, decides, and from_pretrained raises for any other LLM.
        checkpoint = default_checkpoint()
        if checkpoint is None:
            raise ValueError(f"no compressor checkpoint given for {llm_name_or_path!r}: pass one trained for it")
    return ContextCompressor.from_pretrained(checkpoint, llm, tokenizer), llm, tokenizer
