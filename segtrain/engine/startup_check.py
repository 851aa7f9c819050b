"""Start-up validation of a whole configuration, before any dataset is read or model built.

``validate_config(cfg)`` looks at everything that can be checked from the config and the
registries alone, collects every problem (one line each, naming the key, file or value and
the closest valid names) and raises them together as one ``ConfigProblems`` error:

* every name that selects a registered component (``MODEL.META_ARCHITECTURE``,
  ``MODEL.CRITERION.NAME``, ``INPUT.DATASET_MAPPER_NAME``, ...; see ``register_name_key``);
* every dataset of ``DATASETS.TRAIN`` / ``DATASETS.TEST``: registered, and its annotation
  file and image folder present (built-in generated datasets are made on first use);
* the evaluator of each test dataset;
* the criterion: it is built (cheap) so that a weight key naming a loss it does not compute
  fails here; its required outputs against the meta-architecture's ``output_keys``;
* the number of classes in the config against each dataset's metadata, when it lists its
  classes (``register_num_classes_key``);
* ``MODEL.WEIGHTS`` exists when it will be loaded.

Families add their own names with ``register_name_key`` / ``register_num_classes_key``.
"""
import logging
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from segtrain.utils.errors import ConfigError, SegtrainError
from segtrain.utils.registry import format_suggestions

__all__ = ["validate_config", "check_config", "register_name_key", "register_num_classes_key", "ConfigProblems"]

logger = logging.getLogger(__name__)

# (config key, what it names, function returning the valid names)
_NAME_KEYS: List[Tuple[str, str, Callable[[], Iterable[str]]]] = []
# meta-architecture name -> config key holding its number of classes
_NUM_CLASSES_KEYS: Dict[str, str] = {}


def register_name_key(key: str, kind: str, valid_names: Callable[[], Iterable[str]]) -> None:
    """Check that config ``key`` (a string, or a list of strings) is one of ``valid_names()``;
    ``kind`` names the registry in messages (e.g. "CRITERION"). A key absent from a config,
    or set to "", is not checked."""
    _NAME_KEYS.append((key, kind, valid_names))


def register_num_classes_key(meta_arch: str, key: str) -> None:
    """Meta-architecture ``meta_arch`` reads its number of classes from config ``key``; it must
    equal the class count of every dataset (train and test) whose metadata lists its classes."""
    _NUM_CLASSES_KEYS[meta_arch] = key


def _registry_names(module: str, attr: str) -> Callable[[], List[str]]:
    def names() -> List[str]:
        import importlib

        return sorted(getattr(importlib.import_module(module), attr).names())

    return names


def _register_builtins() -> None:
    reg = [
        ("MODEL.META_ARCHITECTURE", "META_ARCH", "segtrain.modeling.meta_arch.build", "META_ARCH_REGISTRY"),
        ("MODEL.BACKBONE.NAME", "BACKBONE", "segtrain.modeling.backbone.build", "BACKBONE_REGISTRY"),
        ("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "PIXEL_DECODER", "segtrain.modeling.pixel_decoder.build",
         "PIXEL_DECODER_REGISTRY"),
        ("MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "TRANSFORMER_DECODER", "segtrain.modeling.transformer_decoder",
         "TRANSFORMER_DECODER_REGISTRY"),
        ("MODEL.CRITERION.NAME", "CRITERION", "segtrain.modeling.criterion.build", "CRITERION_REGISTRY"),
        ("MODEL.MATCHER.NAME", "MATCHER", "segtrain.modeling.matcher.build", "MATCHER_REGISTRY"),
        ("MODEL.CRITERION.SAM3.O2M_MATCHER_NAME", "MATCHER", "segtrain.modeling.matcher.build", "MATCHER_REGISTRY"),
        ("MODEL.CRITERION.SAM3.LOSS_FNS", "SAM3_LOSS", "segtrain.modeling.criterion.sam3_loss_fns",
         "SAM3_LOSS_REGISTRY"),
        ("INPUT.DATASET_MAPPER_NAME", "MAPPER", "segtrain.data.mappers.build", "MAPPER_REGISTRY"),
        ("TEST.EVALUATOR", "EVALUATOR", "segtrain.evaluation.build", "EVALUATOR_REGISTRY"),
    ]
    for key, kind, module, attr in reg:
        register_name_key(key, kind, _registry_names(module, attr))

    def optimizers() -> Sequence[str]:
        from segtrain.solver.build import OPTIMIZERS

        return OPTIMIZERS

    def schedulers() -> Sequence[str]:
        from segtrain.solver.lr_scheduler import LR_SCHEDULERS

        return sorted(LR_SCHEDULERS)

    def policies() -> Sequence[str]:
        from segtrain.data.datasets.annotation_checks import BAD_ANNOTATION_POLICIES

        return BAD_ANNOTATION_POLICIES

    register_name_key("SOLVER.OPTIMIZER", "optimizer", optimizers)
    register_name_key("SOLVER.LR_SCHEDULER_NAME", "LR scheduler", schedulers)
    register_name_key("DATALOADER.SAMPLER_TRAIN", "training sampler", lambda: ["TrainingSampler"])
    register_name_key("DATASETS.ON_BAD_ANNOTATION", "bad-annotation policy", policies)
    register_num_classes_key("MaskFormer", "MODEL.SEM_SEG_HEAD.NUM_CLASSES")


_register_builtins()


def _get(cfg, key: str, default=None):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return default
        node = node[part]
    return node


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _import_components() -> None:
    """Import every built-in module whose import fills a registry or the dataset catalog."""
    import segtrain.data  # noqa: F401
    import segtrain.data.video  # noqa: F401  (VideoDatasetMapper)
    import segtrain.evaluation  # noqa: F401
    import segtrain.modeling  # noqa: F401


def _check_names(cfg, problems: List[str]) -> None:
    for key, kind, valid_names in _NAME_KEYS:
        value = _get(cfg, key)
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        valid = list(valid_names())
        for v in values:
            if v not in valid:
                problems.append(f"{key}: no {kind} named {v!r}.{format_suggestions(str(v), valid)} "
                                f"Valid: {', '.join(map(str, valid)) or '(none registered)'}")


def _generated_datasets() -> set:
    from segtrain.data.datasets.builtin import SHAPES_SPLITS
    from segtrain.data.datasets.shapes_video import SHAPES_VIDEO_SPLITS

    return set(SHAPES_SPLITS) | set(SHAPES_VIDEO_SPLITS)


def _dataset_names(cfg, train: bool) -> List[Tuple[str, str]]:
    keys = (["DATASETS.TRAIN"] if train else []) + ["DATASETS.TEST"]
    out = []
    for key in keys:
        for name in _get(cfg, key, ()) or ():
            out.append((key, name))
    return out


def _check_datasets(cfg, train: bool, problems: List[str]) -> None:
    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
    from segtrain.data.datasets.builtin import register_shapes_from_cfg
    from segtrain.data.datasets.shapes_video import register_shapes_video_from_cfg

    # the loader builders register the built-in datasets with the config's sizes first
    register_shapes_from_cfg(cfg)
    register_shapes_video_from_cfg(cfg)
    if train and not list(_get(cfg, "DATASETS.TRAIN", ()) or ()):
        problems.append("DATASETS.TRAIN is empty: name at least one training dataset")
    generated = _generated_datasets()
    registered = DatasetCatalog.list()
    for key, name in _dataset_names(cfg, train):
        if name not in DatasetCatalog:
            problems.append(f"{key}: dataset {name!r} is not registered.{format_suggestions(name, registered)} "
                            f"Registered: {', '.join(registered)}")
            continue
        if name in generated:
            continue  # written on first use
        meta = MetadataCatalog.get(name)
        json_file = getattr(meta, "json_file", None)
        if json_file and not os.path.isfile(json_file):
            problems.append(f"{key}: annotation file of dataset {name!r} not found: {json_file!r}")
        for attr, what in (("image_root", "image"), ("panoptic_root", "panoptic PNG"), ("sem_seg_root", "label PNG")):
            folder = getattr(meta, attr, None)
            if folder and not os.path.isdir(folder):
                problems.append(f"{key}: {what} folder of dataset {name!r} not found: {folder!r}")


def _check_evaluators(cfg, problems: List[str]) -> None:
    if _get(cfg, "TEST.EVALUATOR"):
        return  # checked as a registry name
    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
    from segtrain.evaluation.build import EVALUATOR_REGISTRY, EVALUATOR_TYPE_TO_NAME

    registered = EVALUATOR_REGISTRY.names()
    for name in _get(cfg, "DATASETS.TEST", ()) or ():
        if name not in DatasetCatalog:
            continue  # reported with the datasets
        etype = getattr(MetadataCatalog.get(name), "evaluator_type", None)
        if etype is None:
            continue  # build_evaluator reports it if an evaluation runs
        evaluator = EVALUATOR_TYPE_TO_NAME.get(etype, etype)
        if evaluator not in registered:
            known = sorted(set(EVALUATOR_TYPE_TO_NAME) | set(registered))
            problems.append(f"DATASETS.TEST: dataset {name!r} has evaluator_type {etype!r}, which names no "
                            f"evaluator.{format_suggestions(etype, known)} Known types: "
                            f"{', '.join(sorted(EVALUATOR_TYPE_TO_NAME))}; or set TEST.EVALUATOR")


# the MaskFormer inference each evaluator scores: evaluator name -> (output key, TEST switch)
_MASKFORMER_OUTPUT_FOR_EVALUATOR = {
    "COCOEvaluator": ("instances", "INSTANCE_ON"),
    "SemSegEvaluator": ("sem_seg", "SEMANTIC_ON"),
    "PanopticEvaluator": ("panoptic_seg", "PANOPTIC_ON"),
}


def _check_maskformer_outputs(cfg, problems: List[str]) -> None:
    """A MaskFormer evaluated by an evaluator whose output it does not produce would fail at
    the first evaluation, after EVAL_PERIOD iterations: say so now."""
    if _get(cfg, "MODEL.META_ARCHITECTURE") != "MaskFormer" or _get(cfg, "MODEL.MASK_FORMER.TEST") is None:
        return
    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
    from segtrain.evaluation.build import EVALUATOR_TYPE_TO_NAME, evaluator_names

    configured = evaluator_names(cfg)
    for name in _get(cfg, "DATASETS.TEST", ()) or ():
        evaluators = configured
        if not evaluators and name in DatasetCatalog:
            etype = getattr(MetadataCatalog.get(name), "evaluator_type", None)
            evaluators = [EVALUATOR_TYPE_TO_NAME.get(etype, etype)]
        for evaluator in evaluators:
            key, switch = _MASKFORMER_OUTPUT_FOR_EVALUATOR.get(evaluator, (None, None))
            if switch and not _get(cfg, f"MODEL.MASK_FORMER.TEST.{switch}"):
                problems.append(f"{evaluator} on {name!r} scores the MaskFormer's {key!r} output, which "
                                f"MODEL.MASK_FORMER.TEST.{switch} False turns off; set it True or choose another "
                                f"TEST.EVALUATOR")


def _meta_arch_class(cfg):
    from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY

    name = _get(cfg, "MODEL.META_ARCHITECTURE")
    return META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None


def _maskformer_num_aux(cfg) -> Optional[int]:
    """Auxiliary outputs of a MaskFormer: one per decoder layer but the last (deep supervision)."""
    mf = _get(cfg, "MODEL.MASK_FORMER")
    if mf is None:
        return None
    return int(mf.DEC_LAYERS) - 1 if mf.DEEP_SUPERVISION else 0


def _check_criterion(cfg, problems: List[str]) -> None:
    from segtrain.modeling.criterion.build import build_criterion, check_criterion_outputs

    arch = _meta_arch_class(cfg)
    produced = getattr(arch, "output_keys", None) if arch is not None else None
    if not isinstance(produced, (set, frozenset, tuple, list)):
        return  # the meta-arch declares its outputs per instance (or uses no criterion): build_model checks
    if any(p.startswith(("MODEL.CRITERION", "MODEL.MATCHER")) for p in problems):
        return  # a criterion or matcher name is already reported; building would repeat it
    try:
        criterion = build_criterion(cfg)
    except SegtrainError as e:
        problems.append(f"MODEL.CRITERION ({_get(cfg, 'MODEL.CRITERION.NAME')}): {e}")
        return
    try:
        check_criterion_outputs(_get(cfg, "MODEL.META_ARCHITECTURE"), produced, criterion)
    except ConfigError as e:
        problems.append(f"MODEL.CRITERION.NAME: {e}")
    check_aux = getattr(criterion, "_check_weight_keys", None)
    num_aux = _maskformer_num_aux(cfg) if _get(cfg, "MODEL.META_ARCHITECTURE") == "MaskFormer" else None
    if callable(check_aux) and num_aux is not None:
        try:
            check_aux(num_aux)
        except ConfigError as e:
            problems.append(f"MODEL.CRITERION weights (MODEL.MASK_FORMER.DEC_LAYERS gives {num_aux} aux outputs): {e}")


def _check_num_classes(cfg, train: bool, problems: List[str]) -> None:
    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog

    key = _NUM_CLASSES_KEYS.get(_get(cfg, "MODEL.META_ARCHITECTURE"))
    num_classes = _get(cfg, key) if key else None
    if num_classes is None:
        return
    for _, name in _dataset_names(cfg, train):
        if name not in DatasetCatalog:
            continue
        meta = MetadataCatalog.get(name)
        # semantic / panoptic heads classify stuff classes (things included); instance heads things
        classes = getattr(meta, "stuff_classes", None) or getattr(meta, "thing_classes", None)
        if classes and len(classes) != int(num_classes):
            shown = ", ".join(map(str, list(classes)[:10])) + (", ..." if len(classes) > 10 else "")
            problems.append(f"{key} is {num_classes} but dataset {name!r} has {len(classes)} classes ({shown}); "
                            f"set {key} {len(classes)}")


def _check_weights(cfg, resume: bool, problems: List[str]) -> None:
    weights = _get(cfg, "MODEL.WEIGHTS")
    if not weights:
        return
    out = _get(cfg, "OUTPUT_DIR")
    if resume and out and os.path.isfile(os.path.join(out, "last_checkpoint")):
        return  # the run resumes from its own checkpoint; MODEL.WEIGHTS is not read
    if not os.path.isfile(weights):
        problems.append(f"MODEL.WEIGHTS: file not found: {weights!r}")


def check_config(cfg, *, train: bool = True, resume: bool = False) -> List[str]:
    """Every problem found in ``cfg``, one line each (empty when it looks runnable).
    ``train``: the training datasets are needed too (not only ``DATASETS.TEST``);
    ``resume``: a checkpoint in ``OUTPUT_DIR`` replaces ``MODEL.WEIGHTS``."""
    _import_components()
    problems: List[str] = []
    _check_names(cfg, problems)
    _check_datasets(cfg, train, problems)
    _check_evaluators(cfg, problems)
    _check_maskformer_outputs(cfg, problems)
    if train:
        _check_criterion(cfg, problems)
    _check_num_classes(cfg, train, problems)
    _check_weights(cfg, resume, problems)
    return [_one_line(p) for p in problems]


class ConfigProblems(ConfigError):
    """Several configuration problems at once: ``problems`` (one line each); ``str`` is the
    lines joined by newlines. The entry scripts print one ``error:`` line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def validate_config(cfg, *, train: bool = True, resume: bool = False) -> None:
    """Raise ``ConfigProblems`` (a ``ConfigError``) listing every problem of ``check_config``."""
    problems = check_config(cfg, train=train, resume=resume)
    if problems:
        raise ConfigProblems(problems)
    logger.debug("Start-up validation passed")
