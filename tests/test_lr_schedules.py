"""Per-epoch learning-rate schedules and how the Brains step them."""

import pytest
import torch
from speechbrain.nnet.schedulers import NewBobScheduler
from speechbrain.utils.checkpoints import Checkpointer

from taste_toolkit.errors import ConfigError
from taste_toolkit.training.lr_schedules import LinearEpochDecay, anneal


def _optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_linear_epoch_decay_reaches_the_final_rate_on_the_last_epoch_and_stays():
    opt, decay = _optimizer(), LinearEpochDecay(1e-3, 1e-4, 7)
    rates = [opt.param_groups[0]["lr"]]
    for epoch in range(1, 9):
        rates.append(anneal(decay, opt, epoch, dev_loss=1.0))
    # The rate each epoch trains with: 1e-3 for epoch 1, 1e-4 for epoch 7 (and after).
    assert rates[:7] == pytest.approx([1e-3, 8.5e-4, 7e-4, 5.5e-4, 4e-4, 2.5e-4, 1e-4])
    assert rates[7:] == pytest.approx([1e-4, 1e-4])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_newbob_still_gets_the_dev_loss():
    opt = _optimizer()
    newbob = NewBobScheduler(initial_value=1e-3, improvement_threshold=0.0025, annealing_factor=0.5, patient=0)
    assert anneal(newbob, opt, 1, dev_loss=2.0) == pytest.approx(1e-3)
    assert anneal(newbob, opt, 2, dev_loss=2.0) == pytest.approx(5e-4)  # no improvement: halved


def test_schedule_survives_a_checkpoint(tmp_path):
    decay = LinearEpochDecay(2e-3, 0.0, 5)
    Checkpointer(tmp_path, {"lr": decay}).save_checkpoint()
    restored = LinearEpochDecay(1.0, 1.0, 2)
    Checkpointer(tmp_path, {"lr": restored}).recover_if_possible()
    assert restored.value_at_epoch == pytest.approx(decay.value_at_epoch)


@pytest.mark.parametrize("args", [(0.0, 0.0, 3), (1e-3, -1e-4, 3), (1e-3, 1e-4, 0)])
def test_bad_schedule_is_refused(args):
    with pytest.raises(ConfigError, match="LinearEpochDecay"):
        LinearEpochDecay(*args)
