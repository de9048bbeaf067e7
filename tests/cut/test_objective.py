"""cut_loss against an independent, loop-based float64 reading of the objective in docs/architecture.md."""

from __future__ import annotations

import math

import pytest
import torch

from cut.objective import cut_loss


def reference_cut_loss(logp_al, logp_mis, mask, negative, lam, alpha):
    """Token by token, in plain Python arithmetic on autograd scalars."""
    l2_terms, l1_terms = [], []
    flagged = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if not mask[b, t]:
                continue
            l2_terms.append(-logp_al[b, t])
            if not negative[b]:
                continue
            p_al, p_mis = math.exp(logp_al[b, t].item()), math.exp(logp_mis[b, t].item())
            if p_al > lam * p_mis:
                flagged[b, t] = True
                l1_terms.append(-alpha * torch.log(1 - torch.exp(logp_mis[b, t])))
            else:
                l1_terms.append(-logp_mis[b, t])
    l2 = sum(l2_terms) / len(l2_terms)
    l1 = sum(l1_terms) / len(l1_terms) if l1_terms else torch.zeros((), dtype=torch.float64)
    return l1 + l2, l1, l2, flagged


def reference_example_loss(logp_al, logp_mis, mask, negative, lam, alpha):
    """The official weighting: each row alone is a token-mean CUT batch (micro_batch_size=1); an
    Align-N row's loss is (L2 + L1) / 2, an Align-P row's L2, the batch loss the mean of the rows' losses."""
    row_losses, l1_rows, l2_rows, flags = [], [], [], []
    for b in range(mask.shape[0]):
        row = slice(b, b + 1)
        _, l1_row, l2_row, flagged = reference_cut_loss(logp_al[row], logp_mis[row], mask[row], negative[row], lam, alpha)
        l2_rows.append(l2_row)
        flags.append(flagged)
        if negative[b]:
            l1_rows.append(l1_row)
        row_losses.append((l2_row + l1_row) / 2 if negative[b] else l2_row)
    l1 = sum(l1_rows) / len(l1_rows) if l1_rows else torch.zeros((), dtype=torch.float64)
    return sum(row_losses) / len(row_losses), l1, sum(l2_rows) / len(l2_rows), torch.cat(flags)


def random_batch(seed: int, negatives: list[bool], T: int = 9):
    g = torch.Generator().manual_seed(seed)
    B = len(negatives)
    vocab_logits = torch.randn(2, B, T, 7, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 7, (B, T, 1), generator=g)
    # Real log-probs: log-softmax over a small vocabulary, gathered at the labels.
    logp = torch.log_softmax(vocab_logits, dim=-1).gather(-1, labels.expand(2, B, T, 1)).squeeze(-1)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return logp[0].clone(), logp[1].clone(), mask, torch.tensor(negatives)


BATCHES = pytest.mark.parametrize(
    "negatives",
    [[True, False, True, True, False], [False, False, False], [True, True], [True]],
    ids=["mixed", "no-align-n", "all-align-n", "single"],
)
HYPER_PARAMETERS = pytest.mark.parametrize("lam,alpha", [(1.1, 1.0), (1.5, 0.25), (1.0, 0.5)])
SEEDS = pytest.mark.parametrize("seed", [0, 1, 2])


@BATCHES
@HYPER_PARAMETERS
@SEEDS
def test_cut_loss_matches_reference_values_flags_and_gradients(negatives, lam, alpha, seed):
    assert_matches_reference(seed, negatives, lam, alpha, reference_cut_loss)  # the default: reduction token


@BATCHES
@HYPER_PARAMETERS
@SEEDS
def test_example_reduction_matches_the_official_per_row_weighting(negatives, lam, alpha, seed):
    assert_matches_reference(seed, negatives, lam, alpha, reference_example_loss, reduction="example")


def test_example_reduction_weighs_rows_not_tokens():
    """A long Align-P row and a one-token Align-N row: per row, the short row weighs as much as the long one."""
    logp_al = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 1.0, 1.0, 1.0]], dtype=torch.float64))
    logp_mis = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0]], dtype=torch.float64))
    mask = torch.tensor([[True] * 4, [True, False, False, False]])
    negative = torch.tensor([False, True])
    token = cut_loss(logp_al, logp_mis, mask, negative, lam=1.1, reduction="token")
    example = cut_loss(logp_al, logp_mis, mask, negative, lam=1.1, reduction="example")
    assert token.loss.item() == pytest.approx((4 * math.log(2) + math.log(4)) / 5 + math.log(2))
    assert example.loss.item() == pytest.approx((math.log(2) + (math.log(4) + math.log(2)) / 2) / 2)
    assert example.l2.item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert torch.equal(token.flagged, example.flagged)


def test_an_unknown_reduction_is_refused():
    logp, mask = torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="reduction 'sum'"):
        cut_loss(logp, logp, mask, torch.tensor([False]), reduction="sum")


def assert_matches_reference(seed, negatives, lam, alpha, reference, **options):
    logp_al, logp_mis, mask, negative = random_batch(seed, negatives)
    ours_al, ours_mis = logp_al.clone().requires_grad_(), logp_mis.clone().requires_grad_()
    ref_al, ref_mis = logp_al.clone().requires_grad_(), logp_mis.clone().requires_grad_()

    out = cut_loss(ours_al, ours_mis, mask, negative, lam=lam, alpha=alpha, **options)
    out.loss.backward()
    loss, l1, l2, flagged = reference(ref_al, ref_mis, mask, negative, lam, alpha)
    loss.backward()

    assert torch.equal(out.flagged, flagged)
    for ours, ref in [(out.loss, loss), (out.l1, l1), (out.l2, l2)]:
        assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    torch.testing.assert_close(ours_al.grad, ref_al.grad, atol=1e-6, rtol=0)
    ref_mis_grad = ref_mis.grad if ref_mis.grad is not None else torch.zeros_like(logp_mis)
    torch.testing.assert_close(ours_mis.grad, ref_mis_grad, atol=1e-6, rtol=0)


def test_flagged_tokens_get_the_unlikelihood_term_and_the_rest_mle():
    logp_al = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    logp_mis = torch.log(torch.tensor([[0.2, 0.5]], dtype=torch.float64))
    out = cut_loss(logp_al, logp_mis, torch.tensor([[True, True]]), torch.tensor([True]), lam=1.1, alpha=0.5)
    assert out.flagged.tolist() == [[True, False]]
    assert out.l1.item() == pytest.approx((-0.5 * math.log(0.8) - math.log(0.5)) / 2)
    assert out.l2.item() == pytest.approx(-math.log(0.5))


def test_unlikelihood_stays_finite_when_p_misaligned_rounds_to_one():
    logp_al = torch.zeros(1, 3)
    logp_mis = torch.tensor([[-1e-30, 0.0, -1e-3]], requires_grad=True)
    out = cut_loss(logp_al, logp_mis, torch.ones(1, 3, dtype=torch.bool), torch.tensor([True]), lam=1.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logp_mis.grad).all()
    # Away from p = 1 the value is the exact −log(1 − p).
    assert out.flagged.tolist() == [[True, False, True]]


def test_loss_without_align_n_rows_is_mle_and_backpropagates():
    logp_al = torch.log(torch.tensor([[0.25, 0.5, 0.9]])).requires_grad_()
    logp_mis = torch.zeros(1, 3, requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    out = cut_loss(logp_al, logp_mis, mask, torch.tensor([False]))
    out.loss.backward()
    assert out.l1.item() == 0.0
    assert out.l2.item() == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert logp_al.grad.tolist() == [[-0.5, -0.5, 0.0]]
    assert not out.flagged.any()
