"""Unlearning losses as small pure functions of logits and labels (HF convention: ``labels`` aligned with the
inputs, ``-100`` = ignored; position t's logits predict token t+1, so the shift happens here, once).

* ``nll``: mean token negative log-likelihood (retain loss; PO's loss on prompt + refusal targets).
* ``sequence_logprob``: per-sequence summed log-probability of the labelled tokens (NPO's quantity).
* ``ga``: gradient ascent, −nll.
* ``npo``: −(2/β) · mean log σ(−β (log p_θ(y|x) − log p_ref(y|x))) (Zhang et al. 2024), sequence-summed; the
  reference log-probabilities are computed once, before training, from the frozen starting model.
* ``po``: nll on prompt + refusal, the refusal teacher-forced (the batch carries refusal labels).
* ``grad_diff``: ga(forget) + λ · nll(retain).

:data:`FORGET_LOSSES` maps the forget-loss names of the config to one signature
``(logits, labels, ref_logprob, beta) -> loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


# fp32 log-softmax elements alive at once (256 MiB): a [b·s, V] fp32 copy of the logits would cost 4 B per
# logit in the forward and again in the backward, several GiB at 8B-model vocabularies
_CHUNK_ELEMENTS = 2**26


def _rows_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]


class _TokenLogprob(torch.autograd.Function):
    """``_rows_logprob`` a chunk of rows at a time; the backward keeps only the model's own logits and recomputes
    each chunk's fp32 log-softmax through the same ops (so values and gradients are those of one big call), writing
    every chunk's gradient into one tensor."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, targets)
        ctx.rows = max(1, _CHUNK_ELEMENTS // logits.shape[-1])
        return torch.cat([_rows_logprob(lg, t) for lg, t in zip(logits.split(ctx.rows), targets.split(ctx.rows))])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets = ctx.saved_tensors
        out = torch.empty_like(logits)
        for lg, t, g, o in zip(logits.split(ctx.rows), targets.split(ctx.rows), grad.split(ctx.rows),
                               out.split(ctx.rows)):
            with torch.enable_grad():
                lg = lg.detach().requires_grad_()
                o.copy_(torch.autograd.grad(_rows_logprob(lg, t), lg, g)[0])
        return out, None


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each labelled next token ``[b, s-1]`` (0 where ignored) and the label mask."""
    b, s, v = logits.shape
    lb = labels[:, 1:]
    mask = lb != IGNORE
    # every position of the flattened (uncopied) logits; the last one of each row predicts nothing and is dropped
    targets = torch.cat([lb.clamp_min(0), lb.new_zeros(b, 1)], 1).reshape(-1)
    lp = _TokenLogprob.apply(logits.reshape(b * s, v), targets).view(b, s)[:, :-1]
    return lp * mask, mask


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    lp, mask = token_logprobs(logits, labels)
    return -lp.sum() / mask.sum().clamp_min(1)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return token_logprobs(logits, labels)[0].sum(-1)


def ga(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -nll(logits, labels)


def npo(logits: torch.Tensor, labels: torch.Tensor, ref_logprob: torch.Tensor, *, beta: float = 0.1) -> torch.Tensor:
    log_ratio = sequence_logprob(logits, labels) - ref_logprob.detach()
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def grad_diff(forget_logits: torch.Tensor, forget_labels: torch.Tensor, retain_logits: torch.Tensor,
              retain_labels: torch.Tensor, *, lam: float = 1.0) -> torch.Tensor:
    return ga(forget_logits, forget_labels) + lam * nll(retain_logits, retain_labels)


FORGET_LOSSES = {
    "ga": lambda logits, labels, ref_logprob, beta: ga(logits, labels),
    "npo": lambda logits, labels, ref_logprob, beta: npo(logits, labels, ref_logprob, beta=beta),
    "po": lambda logits, labels, ref_logprob, beta: nll(logits, labels),
}
