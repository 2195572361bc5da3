"""A SpeechBrain Checkpointer that survives being killed while saving and corrupt files.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes the meta
file ``CKPT.yaml`` *first* and the parameter files after it, and recovers from the
newest folder that has a ``CKPT.yaml``. A run killed while saving therefore leaves
a "checkpoint" with truncated files that makes every restart crash. This subclass
changes two things:

* **Saving is atomic.** ``CKPT.yaml`` is written *last* (temp file + rename), after
  every parameter file, and it records each file's size and SHA-256. A folder
  without it is an unfinished save: invisible to recovery and deleted by the next
  save.
* **Recovery falls back.** Candidates are tried best first (newest, or best
  ``min_key``/``max_key``); one whose files are missing, truncated or fail their
  checksum, or whose loading raises, is skipped with a warning and the previous
  one is loaded instead. When checkpoints exist but none is usable, a
  :class:`~taste_toolkit.errors.MissingResourceError` says so (training does not
  silently restart from scratch).

Checkpoints written by the plain Checkpointer (no checksums) are still loaded;
for them only a failing load triggers the fallback.

YAML: ``checkpointer: !new:taste_toolkit.training.checkpoints.RobustCheckpointer``
(same arguments as SpeechBrain's), or :func:`make_robust` on an existing one.
"""

import hashlib
import logging
import os
import shutil
import time
import warnings

import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from taste_toolkit.errors import MissingResourceError
from taste_toolkit.utils import atomic_write

logger = logging.getLogger(__name__)

#: Meta key holding ``{file name: {"bytes": int, "sha256": str}}``.
CHECKSUMS_KEY = "file_checksums"


def file_digest(path, chunk=1 << 20):
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class RobustCheckpointer(Checkpointer):
    """Checkpointer with atomic, checksummed saves and recovery that skips broken checkpoints.

    Same constructor as :class:`speechbrain.utils.checkpoints.Checkpointer`.
    """

    # ------------------------------------------------------------ saving
    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        # Called by save_checkpoint before the parameter files are written: keep the
        # meta in memory only; _finalize writes it once every file is on disk.
        meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch}
        meta.update(meta_to_include)
        self._pending_meta = (fpath, meta)
        return meta

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Save like SpeechBrain, then publish the checkpoint by writing its meta file last."""
        if if_main_process():
            self.remove_unfinished()
        ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        ddp_barrier()  # savers on other ranks (FSDP) have finished too
        if if_main_process():
            fpath, full_meta = self._pending_meta
            self._finalize(fpath, full_meta)
        return ckpt

    @staticmethod
    def _finalize(fpath, meta):
        folder = os.path.dirname(fpath)
        sums = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and name != METAFNAME:
                with open(path, "rb") as f:  # flushed to disk before the meta file names it
                    os.fsync(f.fileno())
                sums[name] = {"bytes": os.path.getsize(path), "sha256": file_digest(path)}
        meta[CHECKSUMS_KEY] = sums
        with atomic_write(fpath) as f:
            f.write("# yamllint disable\n")
            f.write(yaml.dump(meta))

    def remove_unfinished(self):
        """Delete ``CKPT+*`` folders without a meta file (saves interrupted by a kill)."""
        if not self.checkpoints_dir.is_dir():
            return []
        removed = []
        for path in self.checkpoints_dir.iterdir():
            if path.is_dir() and path.name.startswith(CKPT_PREFIX) and not (path / METAFNAME).exists():
                logger.warning("Removing %s: an unfinished checkpoint (the run was killed while saving).", path)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    # ------------------------------------------------------------ listing
    def list_checkpoints(self):
        """Every readable checkpoint; a folder whose meta file is unreadable is skipped with a warning."""
        out = []
        for folder in self._list_checkpoint_dirs():
            try:
                ckpt = self._construct_checkpoint_objects([folder])[0]
                if not isinstance(ckpt.meta, dict) or "end-of-epoch" not in ckpt.meta:
                    raise ValueError("no 'end-of-epoch' entry")
            except Exception as exc:  # truncated or garbled YAML
                logger.warning("Ignoring checkpoint %s: its %s is unreadable (%s).", folder, METAFNAME, exc)
                continue
            out.append(ckpt)
        return out

    # ------------------------------------------------------------ recovery
    @staticmethod
    def check_checkpoint(ckpt):
        """Why ``ckpt`` cannot be loaded (missing/truncated/modified file), or None if it looks intact."""
        sums = ckpt.meta.get(CHECKSUMS_KEY)
        if not isinstance(sums, dict):
            return None  # written by the plain Checkpointer: only a failing load tells
        for name, info in sums.items():
            path = os.path.join(ckpt.path, name)
            if not os.path.isfile(path):
                return f"{name} is missing"
            size = os.path.getsize(path)
            if size != info.get("bytes"):
                return f"{name} has {size} bytes, {info.get('bytes')} were saved (truncated?)"
            if file_digest(path) != info.get("sha256"):
                return f"{name} fails its SHA-256 checksum (modified or corrupt)"
        return None

    def _reset_loaders(self):
        # A failed load may have set a dataloader's skip position: the fallback
        # checkpoint (maybe an end-of-epoch one, which does not set it) must start clean.
        for obj in self.recoverables.values():
            if hasattr(obj, "_speechbrain_recovery_skip_to"):
                obj._speechbrain_recovery_skip_to = None

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Load the best usable checkpoint (see :meth:`Checkpointer.recover_if_possible`).

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded; None when there is none (a fresh run).

        Raises
        ------
        MissingResourceError
            Checkpoints exist but every one of them is broken.
        """
        candidates = self.find_checkpoints(importance_key=importance_key, max_key=max_key, min_key=min_key,
                                           ckpt_predicate=ckpt_predicate)
        problems = []
        for ckpt in candidates:
            problem = self.check_checkpoint(ckpt)
            if problem is None:
                try:
                    self.load_checkpoint(ckpt)
                except Exception as exc:  # torch/yaml errors on truncated or foreign files
                    problem = f"loading failed: {type(exc).__name__}: {exc}"
                    self._reset_loaders()
            if problem is None:
                if problems:
                    msg = (f"Recovered from the older checkpoint {ckpt.path} because newer ones are broken: "
                           + "; ".join(problems))
                    logger.warning(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                return ckpt
            logger.warning("Checkpoint %s is unusable (%s); trying the previous one.", ckpt.path, problem)
            problems.append(f"{ckpt.path.name}: {problem}")
        if problems:
            raise MissingResourceError(
                f"All {len(problems)} checkpoint(s) in {self.checkpoints_dir} are broken ({'; '.join(problems)}). "
                "Delete them (or the save folder) to start the run over."
            )
        logger.info("Would load a checkpoint here, but none found yet.")
        return None


def make_robust(checkpointer):
    """Turn a SpeechBrain ``Checkpointer`` (e.g. built by a YAML) into a :class:`RobustCheckpointer`.

    The object keeps its identity and recoverables (``hparams["checkpointer"]`` and the
    Brain share it); only its class changes, as the subclass adds no state.
    """
    if checkpointer is not None and type(checkpointer) is Checkpointer:
        checkpointer.__class__ = RobustCheckpointer
    return checkpointer
