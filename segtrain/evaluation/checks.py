"""Start-up checks of ``TEST.EVALUATOR`` and of each test dataset's ``evaluator_type``."""

from typing import List

from segtrain.config.checks import get_key, register_check, register_name_key
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.utils.registry import format_suggestions

from .build import EVALUATOR_REGISTRY, EVALUATOR_TYPE_TO_NAME

__all__: List[str] = []


def _check_evaluator_types(cfg, train: bool, problems: List[str]) -> None:
    if get_key(cfg, "TEST.EVALUATOR"):
        return  # checked as a registry name
    registered = EVALUATOR_REGISTRY.names()
    for name in get_key(cfg, "DATASETS.TEST", ()) or ():
        if name not in DatasetCatalog:
            continue  # reported with the datasets
        etype = getattr(MetadataCatalog.get(name), "evaluator_type", None)
        if etype is None:
            continue  # build_evaluator reports it if an evaluation runs
        evaluator = EVALUATOR_TYPE_TO_NAME.get(etype, etype)
        if evaluator not in registered:
            known = sorted(set(EVALUATOR_TYPE_TO_NAME) | set(registered))
            problems.append(
                f"DATASETS.TEST: dataset {name!r} has evaluator_type {etype!r}, which names no "
                f"evaluator.{format_suggestions(etype, known)} Known types: "
                f"{', '.join(sorted(EVALUATOR_TYPE_TO_NAME))}; or set TEST.EVALUATOR"
            )


register_name_key("TEST.EVALUATOR", "EVALUATOR", lambda: sorted(EVALUATOR_REGISTRY.names()))
register_check(_check_evaluator_types)
