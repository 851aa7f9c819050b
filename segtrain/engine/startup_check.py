"""Start-up validation of a whole configuration, before any dataset is read or model built.

``validate_config(cfg)`` runs every check that the packages registered
(``segtrain.config.checks``) and collects every problem, one line each naming the key, file
or value and the closest valid names, into one ``ConfigProblems`` error:

* every name that selects a registered component (``MODEL.META_ARCHITECTURE``,
  ``MODEL.CRITERION.NAME``, ``INPUT.DATASET_MAPPER_NAME``, ...);
* every dataset of ``DATASETS.TRAIN`` / ``DATASETS.TEST``: registered, and its annotation
  file and image folder present (built-in generated datasets are made on first use);
* the evaluator of each test dataset, and that the model produces the output it scores;
* the criterion: built (cheap) so that a weight key naming a loss it does not compute fails
  here; its required outputs against the meta-architecture's ``output_keys``;
* the number of classes in the config against each dataset's metadata;
* ``MODEL.WEIGHTS`` exists when it will be loaded.

Packages and families add their own with ``register_name_key`` / ``register_num_classes_key``
/ ``register_check`` (``segtrain.config.checks``).
"""

import logging
import os
from typing import List

import segtrain.data  # noqa: F401  (registers datasets, mappers and the data checks)
import segtrain.evaluation  # noqa: F401  (registers evaluators and their checks)
import segtrain.modeling  # noqa: F401  (registers models, criteria, families and their checks)
import segtrain.solver  # noqa: F401  (registers the optimizer and scheduler names)
from segtrain.config.checks import (
    ConfigProblems,
    get_key,
    register_check,
    register_name_key,
    register_num_classes_key,
    run_checks,
)
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.evaluation.build import EVALUATOR_REGISTRY, EVALUATOR_TYPE_TO_NAME, evaluator_names
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY

__all__ = [
    "validate_config",
    "check_config",
    "register_name_key",
    "register_num_classes_key",
    "register_check",
    "ConfigProblems",
]

logger = logging.getLogger(__name__)


def _check_evaluated_outputs(cfg, train: bool, problems: List[str]) -> None:
    """A model evaluated by an evaluator whose output it does not produce (its config turns that
    output off) would fail at the first evaluation, after EVAL_PERIOD iterations: say so now."""
    arch_name = get_key(cfg, "MODEL.META_ARCHITECTURE")
    arch = META_ARCH_REGISTRY.get(arch_name) if arch_name in META_ARCH_REGISTRY else None
    disabled_outputs = getattr(arch, "disabled_outputs", None)
    if not callable(disabled_outputs):
        return
    disabled = disabled_outputs(cfg)
    configured = evaluator_names(cfg)
    for name in get_key(cfg, "DATASETS.TEST", ()) or ():
        evaluators = configured
        if not evaluators and name in DatasetCatalog:
            etype = getattr(MetadataCatalog.get(name), "evaluator_type", None)
            evaluators = [EVALUATOR_TYPE_TO_NAME.get(etype, etype)]
        for evaluator in evaluators:
            key = (
                getattr(EVALUATOR_REGISTRY.get(evaluator), "output_key", None)
                if evaluator in EVALUATOR_REGISTRY
                else None
            )
            if key in disabled:
                problems.append(
                    f"{evaluator} on {name!r} scores the {arch_name}'s {key!r} output, which "
                    f"{disabled[key]} False turns off; set it True or choose another TEST.EVALUATOR"
                )


register_check(_check_evaluated_outputs)


def _check_weights(cfg, resume: bool, problems: List[str]) -> None:
    weights = get_key(cfg, "MODEL.WEIGHTS")
    if not weights:
        return
    out = get_key(cfg, "OUTPUT_DIR")
    if resume and out and os.path.isfile(os.path.join(out, "last_checkpoint")):
        return  # the run resumes from its own checkpoint; MODEL.WEIGHTS is not read
    if not os.path.isfile(weights):
        problems.append(f"MODEL.WEIGHTS: file not found: {weights!r}")


def check_config(cfg, *, train: bool = True, resume: bool = False) -> List[str]:
    """Every problem found in ``cfg``, one line each (empty when it looks runnable).
    ``train``: the training datasets are needed too (not only ``DATASETS.TEST``);
    ``resume``: a checkpoint in ``OUTPUT_DIR`` replaces ``MODEL.WEIGHTS``."""
    problems = run_checks(cfg, train=train)
    weights: List[str] = []
    _check_weights(cfg, resume, weights)
    return problems + weights


def validate_config(cfg, *, train: bool = True, resume: bool = False) -> None:
    """Raise ``ConfigProblems`` (a ``ConfigError``) listing every problem of ``check_config``."""
    problems = check_config(cfg, train=train, resume=resume)
    if problems:
        raise ConfigProblems(problems)
    logger.debug("Start-up validation passed")
