"""ICFormerConfig, the ICFormer model (shapes, mask, causality, padding) and the window planning helpers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaConfig

from icformer_rag import ICFormer, ICFormerConfig, LLMSignature
from icformer_rag.windows import documents_to_windows, plan_batches, split_windows

C = 64
K = 8


def tiny_config(**overrides) -> ICFormerConfig:
    values = dict(
        hidden_size=C, num_blocks=2, num_heads=4, intermediate_size=128, num_digest_tokens=K, window_tokens=32
    )
    values.update(overrides)
    return ICFormerConfig(**values)


# Every property below must hold for each layout option, not only the default.
VARIANTS = {
    "default": {},
    "after": dict(digest_positions="after"),
    "local": dict(local_heads=2),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request) -> ICFormer:
    torch.manual_seed(0)
    m = ICFormer(tiny_config(**VARIANTS[request.param]))
    # Unit-scale output norm (the default matches an LLM's small embedding scale) so differences are easy to see.
    m.reset_parameters(embedding_rms=1.0)
    return m.eval()


def embeds(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ config
def test_config_json_round_trip(tmp_path):
    cfg = tiny_config(rope_theta=50000.0, llm=LLMSignature("some-llm", C, 1000, [0.5, -0.25]))
    again = ICFormerConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert isinstance(again.llm, LLMSignature)
    cfg.save(tmp_path)
    assert ICFormerConfig.load(tmp_path) == cfg


def test_config_unknown_field_raises():
    with pytest.raises(ValueError, match="unknown"):
        ICFormerConfig.from_dict({**tiny_config().to_dict(), "dropout": 0.1})


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(window_tokens=30), "multiple"),
        (dict(hidden_size=66), "divisible"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(num_heads=-4), "num_heads"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(num_digest_tokens=0), "num_digest_tokens"),
        (dict(window_tokens=-32), "window_tokens"),
        (dict(num_blocks=2.0), "num_blocks"),
        (dict(num_special_tokens=2), "num_special_tokens"),
        (dict(hidden_size=12, num_heads=4), "even"),
        (dict(digest_positions="before"), "digest_positions"),
        (dict(local_heads=5), "local_heads"),
        (dict(local_heads=-1), "local_heads"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_config_from_old_checkpoint_keeps_the_layout_it_was_trained_with():
    old = {k: v for k, v in tiny_config().to_dict().items() if k not in ("digest_positions", "local_heads")}
    cfg = ICFormerConfig.from_dict(old)
    assert (cfg.digest_positions, cfg.local_heads) == ("after", 0)
    assert ICFormerConfig().digest_positions == "spread"  # new compressors use the spread layout


def test_config_of_a_checkpoint_with_the_removed_chunk_queries_loads_only_when_off():
    """`chunk_queries` (digest queries from a projection of their own tokens) lost its A/B ("chunk": AE loss 2.917
    against spread's 2.751) and left ICFormerConfig. config.json files written before hold `"chunk_queries":
    false`: they still load, as the same config; one that asks for chunk queries is refused, naming the option."""
    cfg = tiny_config()
    assert not hasattr(cfg, "chunk_queries")
    assert ICFormerConfig.from_dict({**cfg.to_dict(), "chunk_queries": False}) == cfg
    for value in (True, 1, "false", None):
        with pytest.raises(ValueError, match="chunk_queries.*removed"):
            ICFormerConfig.from_dict({**cfg.to_dict(), "chunk_queries": value})
    with pytest.raises(TypeError):
        ICFormerConfig(chunk_queries=True)


def test_local_heads_start_local_and_train():
    m = ICFormer(tiny_config(local_heads=3))
    slopes = m.log_slopes.exp()
    assert slopes.shape == (2, 3)
    torch.testing.assert_close(slopes[0], torch.tensor([1.0, 2**-3, 2**-6]))
    m(embeds(1, 20, C)).sum().backward()
    assert m.log_slopes.grad.abs().sum() > 0


def test_config_for_llm_takes_shape_from_llama_config():
    llama = LlamaConfig(
        hidden_size=96,
        intermediate_size=256,
        num_attention_heads=6,
        num_key_value_heads=2,
        rope_theta=123456.0,
        rms_norm_eps=1e-6,
    )
    cfg = ICFormerConfig.for_llm(llama, num_digest_tokens=16, window_tokens=64)
    assert (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (96, 6, 256)
    assert cfg.rope_theta == 123456.0
    assert cfg.rms_norm_eps == 1e-6
    assert (cfg.num_digest_tokens, cfg.window_tokens, cfg.ratio) == (16, 64, 4)


def test_digests_for_is_ceil_of_ratio():
    cfg = tiny_config()
    assert cfg.ratio == 4
    for t in range(1, 3 * cfg.window_tokens):
        assert cfg.digests_for(t) == math.ceil(t / cfg.ratio)
    assert cfg.digests_for(cfg.window_tokens) == cfg.num_digest_tokens


# ------------------------------------------------------------------------------------------------- model
def test_output_shape(model):
    out = model(embeds(3, 20, C))
    assert out.shape == (3, K, C)
    assert model(embeds(3, 20, C), num_digests=5).shape == (3, 5, C)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("m", [0, K + 1, -1])
def test_num_digests_out_of_range_raises(model, m):
    with pytest.raises(ValueError, match="num_digests"):
        model(embeds(1, 10, C), num_digests=m)


def test_wrong_input_shapes_raise_value_error(model):
    with pytest.raises(ValueError, match="context_embeds"):
        model(embeds(2, 10, C // 2))
    with pytest.raises(ValueError, match="context_embeds"):
        model(embeds(10, C))
    with pytest.raises(ValueError, match="attention_mask"):
        model(embeds(2, 10, C), torch.ones(2, 11, dtype=torch.bool))


def test_padded_positions_are_invisible(model):
    x = embeds(2, 12, C)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 9:] = False  # right padding
    mask[1, :4] = False  # left padding
    ref = model(x, mask)
    y = x.clone()
    y[0, 9:] += 100 * embeds(3, C, seed=2)
    y[1, :4] += 100 * embeds(4, C, seed=3)
    torch.testing.assert_close(model(y, mask), ref, atol=0, rtol=0)


def test_padding_gets_no_gradient(model):
    x = embeds(1, 12, C).requires_grad_(True)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 8:] = False
    model(x, mask).sum().backward()
    assert x.grad[0, 8:].abs().max() == 0
    assert (x.grad[0, :8].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("i", [0, 5, 11])
def test_every_real_token_reaches_every_digest(model, i):
    x = embeds(1, 12, C)
    ref = model(x)
    y = x.clone()
    y[0, i] += embeds(C, seed=4)
    diff = (model(y) - ref).abs().amax(-1)  # (1, M)
    assert (diff > 1e-4).all(), diff


def test_digests_are_causal_among_themselves(model):
    x = embeds(1, 10, C)
    for j in range(K):
        model.zero_grad()
        model(x)[0, j].sum().backward()
        grad = model.digest_embeddings.grad.abs().sum(-1)  # (K,)
        assert (grad[j + 1 :] == 0).all(), f"digest {j} depends on a later initial digest"
        assert (grad[: j + 1] > 0).all(), f"digest {j} misses an earlier initial digest"
    model.zero_grad()


def test_editing_later_digest_embeddings_leaves_earlier_digests(model):
    x = embeds(2, 10, C)
    ref = model(x)
    original = model.digest_embeddings.detach().clone()
    try:
        with torch.no_grad():
            model.digest_embeddings[5:] += 3.0
        out = model(x)
    finally:
        with torch.no_grad():
            model.digest_embeddings.copy_(original)
    torch.testing.assert_close(out[:, :5], ref[:, :5], atol=1e-6, rtol=0)
    assert (out[:, 5:] - ref[:, 5:]).abs().max() > 1e-3


@pytest.mark.parametrize("m", [1, 3, K - 1])
def test_first_m_digests_do_not_depend_on_how_many_are_asked(model, m):
    x = embeds(2, 17, C)
    torch.testing.assert_close(model(x, num_digests=m), model(x)[:, :m], atol=1e-5, rtol=1e-5)


def test_left_and_right_padding_equal_no_padding(model):
    n, pad = 13, 6
    x = embeds(1, n, C)
    ref = model(x)
    junk = embeds(1, pad, C, seed=9)
    right = torch.cat((x, junk), 1)
    left = torch.cat((junk, x), 1)
    mask_right = torch.cat((torch.ones(1, n), torch.zeros(1, pad)), 1).bool()
    mask_left = mask_right.flip(-1)
    torch.testing.assert_close(model(right, mask_right), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(left, mask_left), ref, atol=1e-5, rtol=1e-5)
    # An integer 0/1 mask means the same as a boolean one.
    torch.testing.assert_close(model(left, mask_left.long()), ref, atol=1e-5, rtol=1e-5)


def test_batch_rows_are_independent(model):
    x = embeds(3, 11, C)
    together = model(x)
    for b in range(3):
        torch.testing.assert_close(model(x[b : b + 1]), together[b : b + 1], atol=1e-5, rtol=1e-5)


def test_bf16_forward_runs_and_stays_close():
    torch.manual_seed(0)
    m32 = ICFormer(tiny_config()).eval()
    m32.reset_parameters(embedding_rms=1.0)
    m16 = ICFormer(tiny_config()).eval()
    m16.load_state_dict(m32.state_dict())
    m16.to(torch.bfloat16)
    x = embeds(2, 20, C)
    out16 = m16(x)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), m32(x), atol=0.1, rtol=0.05)


# ----------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 64, 100])
def test_split_windows_covers_every_token_in_order(n):
    ids = list(range(1000, 1000 + n))
    windows = split_windows(ids, 32)
    assert [t for w in windows for t in w] == ids
    assert all(1 <= len(w) <= 32 for w in windows)
    assert len(windows) == math.ceil(n / 32)
    assert all(len(w) == 32 for w in windows[:-1])


def test_split_windows_rejects_bad_window():
    with pytest.raises(ValueError):
        split_windows([1, 2, 3], 0)


def test_documents_to_windows_keeps_doc_and_order():
    docs = [list(range(70)), [], list(range(5))]
    windows = documents_to_windows(docs, 32)
    assert [(w.doc, w.index, len(w.ids)) for w in windows] == [(0, 0, 32), (0, 1, 32), (0, 2, 6), (2, 0, 5)]
    assert [t for w in windows if w.doc == 0 for t in w.ids] == docs[0]


@pytest.mark.parametrize("budget", [32, 50, 100, 1000])
def test_plan_batches_uses_every_item_once_within_budget(budget):
    lengths = [32, 5, 17, 32, 1, 9, 30, 2, 32, 12, 40]  # 40 > 32: alone when the budget is 32
    batches = plan_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= budget or len(b) == 1


def test_plan_batches_edge_cases():
    assert plan_batches([], 10) == []
    assert plan_batches([100], 10) == [[0]]
    with pytest.raises(ValueError):
        plan_batches([1], 0)
