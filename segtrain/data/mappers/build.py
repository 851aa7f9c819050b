"""MAPPER registry and ``build_mapper``."""

from segtrain.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY", "build_mapper"]

MAPPER_REGISTRY = Registry("MAPPER")
MAPPER_REGISTRY.__doc__ = """Dataset mappers: ``cls(cfg, is_train: bool)`` (via ``@configurable`` /
``from_config``) -> callable(dataset_dict) -> model-input dict (CONTRACTS.md), or ``None``
to skip the item (bad image under ``DATASETS.ON_BAD_ANNOTATION = "skip"``)."""


def build_mapper(cfg, is_train: bool):
    """The mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``."""
    return MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, is_train=is_train)
