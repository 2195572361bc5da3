"""Random-number-generator state as a checkpoint recoverable.

SpeechBrain's Checkpointer saves modules, optimizers and counters but not the
RNG state, so a resumed run draws different dropout masks (and quantizer-dropout
depths) than an uninterrupted one. Listing ``rng_state: !new:taste_toolkit.
training.rng_state.RNGState`` among the recoverables makes resumption exact on CPU.
"""

import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


@register_checkpoint_hooks
class RNGState:
    """Saves and restores the Python, NumPy and torch (CPU and CUDA) generators."""

    @mark_as_saver
    def save(self, path):
        state = {
            "torch": torch.get_rng_state(),
            "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
            "python_pos": torch.tensor(random.getstate()[2] if random.getstate()[2] is not None else -1),
            "numpy_keys": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": torch.tensor(np.random.get_state()[2]),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        state = torch.load(path, weights_only=True)
        torch.set_rng_state(state["torch"])
        pos = int(state["python_pos"])
        random.setstate((3, tuple(int(x) for x in state["python"]), None if pos == -1 else pos))
        np_state = np.random.get_state()
        np.random.set_state((np_state[0], state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"]))
