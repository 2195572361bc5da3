"""Evaluation harness: score several systems side by side with metric plugins.

* :mod:`.systems` -- what is evaluated (``original``, ``tokenizer``,
  ``units_topline``, ``directory``; new types register with ``register_system``).
* :mod:`.data` -- evaluation sets (``metadata.jsonl`` or a manifest CSV).
* :mod:`.harness` -- the resumable run: reconstruct with one system at a time,
  score with one metric at a time (``taste_toolkit/plugins/metric/``).
* :mod:`.report` -- summary table in the paper's layout, JSON, wide CSV, plots.
* :mod:`.real_speech` -- the small real-speech set built from registry packages.

Entry points: ``taste evaluate --config CONFIG.yaml`` and
``python recipes/librispeech/evaluate.py --config CONFIG.yaml``.
"""

from taste_toolkit.evaluation.data import Utterance, load_eval_set
from taste_toolkit.evaluation.harness import Evaluation, load_config, validate_config
from taste_toolkit.evaluation.systems import System, build_system, register_system, system_types

__all__ = ["Evaluation", "System", "Utterance", "build_system", "load_config", "load_eval_set",
           "register_system", "system_types", "validate_config"]
