"""Top-k sampling of the next unit with an optionally banned end-of-speech class.

CosyVoice / TASTE draw the next unit among the ``k`` most likely classes (EOS
included) and, while EOS is not yet allowed, redraw whenever EOS comes out: the
same as renormalising the top-k without EOS, which is what :func:`pick_top_k`
does (no loop, one draw per row).
"""

import torch


def pick_top_k(logits, top_k, banned_class=None, ban=None, temperature=1.0, generator=None):
    """Choose one class per row.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, C)`` scores.
    top_k : int
        ``<= 0``: greedy (argmax); ``k >= 1``: sample among the ``k`` best
        (``k = 1`` is greedy too).
    banned_class : int, optional
        Class (EOS) that rows with ``ban`` may not take.
    ban : torch.Tensor, optional
        ``(B,)`` bool, rows where ``banned_class`` is forbidden. If it was among
        a row's top-k, that row samples among the other ``k - 1`` (as the
        release's redraw loop); if it was the only candidate, the best other class.
    temperature : float
        Softmax temperature (> 0) of the sampling.
    generator : torch.Generator, optional
        Random source of the draw.

    Returns
    -------
    torch.Tensor
        ``(B,)`` long chosen classes.
    """
    logits = logits.float()
    if banned_class is not None and ban is not None and bool(ban.any()):
        masked = logits.clone()
        masked[:, banned_class] = torch.where(ban, -float("inf"), masked[:, banned_class])
    else:
        ban, masked = None, logits
    if top_k <= 1:
        return masked.argmax(-1)
    values, indices = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
    if ban is not None:
        values = values.masked_fill((indices == banned_class) & ban[:, None], -float("inf"))
        empty = torch.isinf(values).all(-1)
        if bool(empty.any()):  # the banned class was the only candidate (or all were -inf)
            values[empty, 0] = 0.0
            indices[empty, 0] = masked[empty].argmax(-1)
    # Shift so the best is 0, scale in float64: any finite temperature stays finite.
    shifted = (values - values.max(-1, keepdim=True).values).double()
    scaled = torch.where(torch.isfinite(shifted), shifted / temperature, shifted)
    choice = torch.multinomial(torch.softmax(scaled, -1).float(), 1, generator=generator)
    return indices.gather(-1, choice)[:, 0]
