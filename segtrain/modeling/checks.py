"""Start-up checks of the model keys: component names, the criterion against the
meta-architecture's outputs and aux count, and the number of classes against the datasets."""

from typing import List

from segtrain.config.checks import get_key, num_classes_key, register_check, register_name_key
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.data.checks import dataset_names
from segtrain.utils.errors import ConfigError, SegtrainError

from .backbone.build import BACKBONE_REGISTRY
from .criterion.build import CRITERION_REGISTRY, build_criterion, check_criterion_outputs
from .criterion.sam3_loss_fns import SAM3_LOSS_REGISTRY
from .matcher.build import MATCHER_REGISTRY
from .meta_arch.build import META_ARCH_REGISTRY

__all__: List[str] = []


def _meta_arch_class(cfg):
    name = get_key(cfg, "MODEL.META_ARCHITECTURE")
    return META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None


def _check_meta_arch_set(cfg, train: bool, problems: List[str]) -> None:
    if not get_key(cfg, "MODEL.META_ARCHITECTURE"):
        problems.append(
            "MODEL.META_ARCHITECTURE is empty: name the model to build, one of "
            f"{', '.join(sorted(META_ARCH_REGISTRY.names()))}"
        )


def _check_criterion(cfg, train: bool, problems: List[str]) -> None:
    """The criterion is built (cheap) so that a weight key naming a loss it does not compute
    fails now; its required outputs are checked against the meta-architecture's
    ``output_keys`` and its aux weights against the meta-architecture's ``num_aux_outputs``."""
    arch = _meta_arch_class(cfg)
    produced = getattr(arch, "output_keys", None) if arch is not None else None
    if not isinstance(produced, (set, frozenset, tuple, list)):
        return  # the meta-arch declares its outputs per instance (or uses no criterion): build_model checks
    if any(p.startswith(("MODEL.CRITERION", "MODEL.MATCHER")) for p in problems):
        return  # a criterion or matcher name is already reported; building would repeat it
    try:
        criterion = build_criterion(cfg)
    except SegtrainError as e:
        problems.append(f"MODEL.CRITERION ({get_key(cfg, 'MODEL.CRITERION.NAME')}): {e}")
        return
    try:
        check_criterion_outputs(get_key(cfg, "MODEL.META_ARCHITECTURE"), produced, criterion)
    except ConfigError as e:
        problems.append(f"MODEL.CRITERION.NAME: {e}")
    check_aux = getattr(criterion, "check_weight_keys", None)
    num_aux_outputs = getattr(arch, "num_aux_outputs", None)
    if callable(check_aux) and callable(num_aux_outputs):
        num_aux, source = num_aux_outputs(cfg)
        try:
            check_aux(num_aux)
        except ConfigError as e:
            problems.append(f"MODEL.CRITERION weights ({source} gives {num_aux} aux outputs): {e}")


def _check_num_classes(cfg, train: bool, problems: List[str]) -> None:
    key = num_classes_key(get_key(cfg, "MODEL.META_ARCHITECTURE"))
    num_classes = get_key(cfg, key) if key else None
    if num_classes is None:
        return
    for _, name in dataset_names(cfg, train):
        if name not in DatasetCatalog:
            continue
        meta = MetadataCatalog.get(name)
        # semantic / panoptic heads classify stuff classes (things included); instance heads things
        classes = getattr(meta, "stuff_classes", None) or getattr(meta, "thing_classes", None)
        if classes and len(classes) != int(num_classes):
            shown = ", ".join(map(str, list(classes)[:10])) + (", ..." if len(classes) > 10 else "")
            problems.append(
                f"{key} is {num_classes} but dataset {name!r} has {len(classes)} classes ({shown}); "
                f"set {key} {len(classes)}"
            )


register_name_key("MODEL.META_ARCHITECTURE", "META_ARCH", lambda: sorted(META_ARCH_REGISTRY.names()))
register_name_key("MODEL.BACKBONE.NAME", "BACKBONE", lambda: sorted(BACKBONE_REGISTRY.names()))
register_name_key("MODEL.CRITERION.NAME", "CRITERION", lambda: sorted(CRITERION_REGISTRY.names()))
register_name_key("MODEL.MATCHER.NAME", "MATCHER", lambda: sorted(MATCHER_REGISTRY.names()))
register_name_key("MODEL.CRITERION.SAM3.O2M_MATCHER_NAME", "MATCHER", lambda: sorted(MATCHER_REGISTRY.names()))
register_name_key("MODEL.CRITERION.SAM3.LOSS_FNS", "SAM3_LOSS", lambda: sorted(SAM3_LOSS_REGISTRY.names()))
register_check(_check_meta_arch_set)
register_check(_check_criterion, train_only=True)
register_check(_check_num_classes)
