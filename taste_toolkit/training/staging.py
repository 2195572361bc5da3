"""Staged training (text-only -> no-VQ -> full TASTE), each stage initialized from the last."""

import glob
import logging
import os

import torch

from taste_toolkit.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MODULES = ("aggregator", "quantizer", "decoder")


def find_checkpoint_dir(path):
    """A SpeechBrain checkpoint folder ``CKPT+...`` or an experiment's save folder."""
    if glob.glob(os.path.join(path, "*.ckpt")):
        return path
    ckpts = sorted(glob.glob(os.path.join(path, "CKPT+*")) + glob.glob(os.path.join(path, "save", "CKPT+*")))
    if not ckpts:
        raise ConfigError(
            f"init_from={path!r} holds no checkpoint (expected CKPT+* folders or *.ckpt files). "
            "Run the previous stage first, or clear init_from."
        )
    return ckpts[-1]


def load_previous_stage(path, model, modules=None):
    """Load the modules an earlier stage saved into ``model`` (missing params keep their init).

    Returns the list of ``(module, missing_keys)`` for logging and tests.
    """
    folder = find_checkpoint_dir(path)
    report = []
    for name in modules or DEFAULT_MODULES:
        file = os.path.join(folder, f"{name}.ckpt")
        target = getattr(model, name, None)
        if target is None or not os.path.exists(file):
            continue
        state = torch.load(file, map_location="cpu", weights_only=True)
        own = target.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = sorted(set(own) - set(usable))
        target.load_state_dict(usable, strict=False)
        logger.info("init_from %s: loaded %d tensors into %s (%d kept their init)", folder, len(usable), name, len(missing))
        report.append((name, missing))
    if not report:
        raise ConfigError(f"init_from={path!r}: none of {list(modules or DEFAULT_MODULES)} found in {folder}.")
    return report
