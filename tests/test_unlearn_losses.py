import math

import pytest
import torch

from clueflow.unlearn.losses import IGNORE, ga, grad_diff, nll, npo, sequence_logprob


def _logits(probs_per_step):
    """Logits whose softmax at each step is the given distribution (log-probs as logits)."""
    return torch.tensor([probs_per_step]).log()


def test_nll_shifts_once_and_ignores_masked_labels():
    # 3 positions, vocab 2; position t predicts token t+1
    logits = _logits([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    labels = torch.tensor([[IGNORE, 1, 0]])  # predict token1=1 from step 0 (p=.5), token2=0 from step 1 (p=.2)
    assert nll(logits, labels).item() == pytest.approx(-(math.log(0.5) + math.log(0.2)) / 2)
    assert ga(logits, labels).item() == pytest.approx((math.log(0.5) + math.log(0.2)) / 2)
    assert sequence_logprob(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.2))
    only_last = torch.tensor([[IGNORE, IGNORE, 0]])
    assert nll(logits, only_last).item() == pytest.approx(-math.log(0.2))


def test_npo_against_hand_computation_and_its_limits():
    labels = torch.tensor([[IGNORE, 1, 0]])
    model = _logits([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    ref = _logits([[0.25, 0.75], [0.4, 0.6], [0.9, 0.1]])
    beta = 0.5
    ratio = (math.log(0.5) + math.log(0.2)) - (math.log(0.75) + math.log(0.4))
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * ratio)))
    assert npo(model, labels, sequence_logprob(ref, labels), beta=beta).item() == pytest.approx(expected, rel=1e-6)
    assert npo(ref, labels, sequence_logprob(ref, labels), beta=beta).item() == pytest.approx((2 / beta) * math.log(2), rel=1e-6)  # at ref


def test_grad_diff_is_ga_plus_weighted_retain_nll():
    f = _logits([[0.5, 0.5], [0.2, 0.8]])
    r = _logits([[0.3, 0.7], [0.6, 0.4]])
    lf, lr = torch.tensor([[IGNORE, 1]]), torch.tensor([[IGNORE, 0]])
    assert grad_diff(f, lf, r, lr, lam=2.0).item() == pytest.approx(math.log(0.5) - 2 * math.log(0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_in_chunks_bit_equal_to_one_log_softmax(monkeypatch, dtype):
    from clueflow.unlearn import losses

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 11, generator=gen) * 4).to(dtype)
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[0, :3] = IGNORE
    labels[2, -1] = IGNORE
    weights = torch.randn(3, 6, generator=gen)

    def value_and_grad(fn):
        x = logits.clone().requires_grad_()
        lp, mask = fn(x)
        (lp * weights).sum().backward()
        return lp, mask, x.grad

    def plain(x):  # the formula on the whole tensor at once
        lb = labels[:, 1:]
        mask = lb != IGNORE
        return torch.log_softmax(x[:, :-1].float(), -1).gather(-1, lb.clamp_min(0)[..., None])[..., 0] * mask, mask

    want = value_and_grad(plain)
    for rows in (1, 4, 21, 100):  # one row, uneven chunks, every row at once
        monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", rows * 11)
        got = value_and_grad(lambda x: losses.token_logprobs(x, labels))
        assert got[2].dtype == dtype
        assert all(torch.equal(g, w) for g, w in zip(got, want)), rows
    with torch.no_grad():
        assert torch.equal(losses.token_logprobs(logits, labels)[0], want[0])
