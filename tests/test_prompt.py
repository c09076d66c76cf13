"""The digest splice of icformer_rag.prompt, which generation, training and the evaluators share."""

from __future__ import annotations

import pytest
import torch

from icformer_rag.prompt import SPECIAL_AE, SPECIAL_BEGIN, SPECIAL_END, digest_block, pad_rows


def test_digest_block_layout_batched_and_with_gradients():
    special = torch.randn(3, 8, requires_grad=True)
    digests = torch.randn(2, 5, 8, dtype=torch.float64)
    block = digest_block(special, digests[0])
    assert block.shape == (7, 8) and block.dtype == torch.float64
    assert torch.equal(block[0], special[SPECIAL_BEGIN].double()) and torch.equal(
        block[-1], special[SPECIAL_END].double()
    )
    assert torch.equal(block[1:-1], digests[0])
    ae = digest_block(special, digests, autoencode=True)  # a batch, with the AE embedding after END
    assert ae.shape == (2, 8, 8)
    for row in range(2):
        assert torch.equal(ae[row, :7], digest_block(special, digests[row]))
        assert torch.equal(ae[row, 7], special[SPECIAL_AE].double())
    ae.sum().backward()  # training: the special embeddings learn through the block
    assert special.grad is not None and torch.all(special.grad[SPECIAL_BEGIN] == 2)
    empty = digest_block(special, torch.zeros(0, 8))
    assert empty.shape == (2, 8)  # an empty context is BEGIN END


def test_pad_rows_left_for_generation_right_for_training():
    rows = [torch.ones(2, 4), 2 * torch.ones(3, 4)]
    left, lmask = pad_rows(rows, "left")
    right, rmask = pad_rows(rows, "right")
    assert left.shape == right.shape == (2, 3, 4)
    assert lmask.tolist() == [[0, 1, 1], [1, 1, 1]] and rmask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert torch.equal(left[0, 1:], rows[0]) and torch.equal(right[0, :2], rows[0])
    assert torch.all(left[0, 0] == 0) and torch.all(right[0, 2] == 0)
    with pytest.raises(ValueError, match="side"):
        pad_rows(rows, "middle")
