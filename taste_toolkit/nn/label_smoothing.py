"""Label-smoothed cross-entropy as ESPnet/WeNet/CosyVoice's ``LabelSmoothingLoss``."""

import torch


def label_smoothing_loss(logits, labels, smoothing=0.0, normalize_length=True, ignore_index=-100):
    """KL divergence to the smoothed one-hot target, summed over valid targets.

    The target puts ``1 - smoothing`` on the label and ``smoothing / (C - 1)`` on
    every class (label included, as ESPnet). With ``smoothing = 0`` and
    ``normalize_length`` this is the mean cross-entropy over valid targets.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, L, C)`` scores.
    labels : torch.Tensor
        ``(B, L)`` class ids, ``ignore_index`` where there is no target.
    smoothing : float
        Label smoothing in ``[0, 1)``.
    normalize_length : bool
        Divide by the number of valid targets (True) or by ``B``.
    ignore_index : int
        Label of positions without a target.

    Returns
    -------
    torch.Tensor
        Scalar loss (float32).
    """
    classes = logits.shape[-1]
    flat, target = logits.reshape(-1, classes).float(), labels.reshape(-1)
    ignore = target == ignore_index
    true_dist = torch.full_like(flat, smoothing / (classes - 1))
    true_dist.scatter_(1, target.masked_fill(ignore, 0)[:, None], 1.0 - smoothing)
    kl = torch.xlogy(true_dist, true_dist) - true_dist * torch.log_softmax(flat, dim=-1)
    denom = int((~ignore).sum()) if normalize_length else logits.shape[0]
    return kl.masked_fill(ignore[:, None], 0.0).sum() / max(denom, 1)
