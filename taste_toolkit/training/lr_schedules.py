"""Learning-rate schedules the recipes' Brains step once per epoch.

SpeechBrain's ``NewBobScheduler`` (the recipes' ``lr_annealing``) only anneals when
the dev loss stops improving; in the short main job it never does, so training ends
at the peak learning rate. ``LinearEpochDecay`` lowers the rate linearly over the
planned epochs instead. On the embedded corpus it ended lower (dev unit top-5 0.682
against 0.722 after 7 epochs; RESULTS.md, session 12): the decoder there is still
learning fast at the end. It stays an option (``lr_annealing`` in the YAML).

A Brain tells the two kinds apart by :attr:`steps_on`: ``"epoch"`` schedules are
called with the epoch just finished, the others (``NewBobScheduler``) with the dev loss.
"""

import torch
from speechbrain.nnet.schedulers import LinearScheduler, update_learning_rate
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from taste_toolkit.errors import ConfigError


@register_checkpoint_hooks
class LinearEpochDecay(LinearScheduler):
    """Learning rate going linearly from ``initial_value`` (epoch 1) to ``final_value`` (last epoch).

    Arguments
    ---------
    initial_value : float
        Learning rate of the first epoch (the optimizer's ``lr``).
    final_value : float
        Learning rate of the last epoch, ``epoch_count``; later epochs keep it.
    epoch_count : int
        Epochs of the run (``number_of_epochs``).

    Example
    -------
    >>> decay = LinearEpochDecay(1e-3, 1e-4, 4)
    >>> [round(decay(epoch)[1], 6) for epoch in (1, 2, 3, 4)]
    [0.0007, 0.0004, 0.0001, 0.0001]
    """

    #: Called with the epoch just finished (not with a dev loss).
    steps_on = "epoch"

    def __init__(self, initial_value, final_value, epoch_count):
        if not (initial_value > 0 and final_value >= 0 and int(epoch_count) >= 1):
            raise ConfigError(
                f"LinearEpochDecay needs initial_value > 0, final_value >= 0 and epoch_count >= 1; got "
                f"{initial_value}, {final_value}, {epoch_count}."
            )
        super().__init__(initial_value, final_value, int(epoch_count))

    def __call__(self, current_epoch):
        """``(lr of current_epoch, lr of the next epoch)``, epochs counted from 1."""
        # SpeechBrain's LinearScheduler indexes past its table after epoch_count + 1.
        return super().__call__(min(int(current_epoch), len(self.value_at_epoch)))

    @mark_as_saver
    def save(self, path):
        torch.save({"value_at_epoch": self.value_at_epoch}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        del end_of_epoch  # the schedule is a function of the epoch: nothing else to restore
        self.value_at_epoch = torch.load(path)["value_at_epoch"]


def anneal(scheduler, optimizer, epoch, dev_loss):
    """Step an ``lr_annealing`` object after an epoch's validation and set the new rate.

    ``steps_on = "epoch"`` schedules get the epoch, the others (``NewBobScheduler``) the dev loss.
    """
    if getattr(scheduler, "steps_on", "metric") == "epoch":
        _, new = scheduler(epoch)
    else:
        _, new = scheduler(dev_loss)
    update_learning_rate(optimizer, new)
    return new


__all__ = ["LinearEpochDecay", "anneal"]
