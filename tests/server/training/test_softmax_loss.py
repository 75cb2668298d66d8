"""The chunked full-softmax loss is F.cross_entropy over the whole catalogue: same loss, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pocketrank.server.training.softmax_loss import softmax_cross_entropy


def _inputs(n: int, c: int = 97, dim: int = 16, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, dim, generator=g) * scale).requires_grad_()
    items = (torch.randn(c, dim, generator=g) * scale).requires_grad_()
    return h, items, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("n,chunk", [(1, 256), (50, 7), (64, 16), (300, 256), (255, 256), (257, 256)])
def test_loss_and_gradients_are_cross_entropys(n, chunk):
    """Chunks that divide the positions, that do not, one position, one chunk and a chunk plus one."""
    h, items, target = _inputs(n)
    ref = F.cross_entropy(h @ items.T, target)
    ref.backward()
    ref_h, ref_items = h.grad.clone(), items.grad.clone()
    h.grad = items.grad = None
    got = softmax_cross_entropy(h, items, target, chunk)
    got.backward()
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(h.grad, ref_h, atol=1e-6, rtol=1e-4)
    assert torch.allclose(items.grad, ref_items, atol=1e-6, rtol=1e-4)


def test_large_logits_stay_finite():
    """The softmax is taken after each row's maximum is subtracted: logits of several hundred do not overflow."""
    h, items, target = _inputs(40, scale=8.0)
    assert (h @ items.T).abs().max() > 200
    got = softmax_cross_entropy(h, items, target, 16)
    got.backward()
    ref = F.cross_entropy(h.detach() @ items.detach().T, target)
    assert torch.isfinite(got) and torch.allclose(got, ref, rtol=1e-5)
    assert torch.isfinite(h.grad).all() and torch.isfinite(items.grad).all()


def test_the_upstream_gradient_scales_both_inputs():
    h, items, target = _inputs(30)
    (3.0 * softmax_cross_entropy(h, items, target, 8)).backward()
    got_h, got_items = h.grad.clone(), items.grad.clone()
    h.grad = items.grad = None
    (3.0 * F.cross_entropy(h @ items.T, target)).backward()
    assert torch.allclose(got_h, h.grad, atol=1e-6) and torch.allclose(got_items, items.grad, atol=1e-6)


def test_no_positions_is_a_zero_loss_with_zero_gradients():
    h, items, target = _inputs(0)
    loss = softmax_cross_entropy(h, items, target)
    loss.backward()
    assert float(loss.detach()) == 0.0 and items.grad is not None and float(items.grad.abs().sum()) == 0.0


def test_a_view_of_a_larger_table_gets_its_gradient():
    """Training passes table[1:] (row 0 is padding): the gradient reaches the table, row 0 untouched."""
    h, _, target = _inputs(20, c=10)
    table = torch.randn(11, 16, requires_grad=True)
    softmax_cross_entropy(h, table[1:], target, 8).backward()
    ref = table.detach().clone().requires_grad_()
    F.cross_entropy(h.detach() @ ref[1:].T, target).backward()
    assert torch.allclose(table.grad, ref.grad, atol=1e-6) and float(table.grad[0].abs().sum()) == 0.0


def test_without_gradients_the_loss_is_the_same():
    h, items, target = _inputs(70)
    with torch.no_grad():
        got = softmax_cross_entropy(h, items, target, 16)
        ref = F.cross_entropy(h @ items.T, target)
    assert not got.requires_grad and torch.allclose(got, ref, atol=1e-5)
    plain_h, plain_items = h.detach(), items.detach()  # no input wants a gradient, grad mode on
    assert torch.allclose(softmax_cross_entropy(plain_h, plain_items, target, 16), ref, atol=1e-5)


def test_a_chunk_of_no_positions_is_refused():
    h, items, target = _inputs(4)
    with pytest.raises(ValueError, match="chunk"):
        softmax_cross_entropy(h, items, target, 0)
