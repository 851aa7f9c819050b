"""Dataset mappers: one dataset dict -> one model input."""

from .build import MAPPER_REGISTRY, build_mapper
from .instance_mapper import InstanceDatasetMapper

__all__ = ["MAPPER_REGISTRY", "build_mapper", "InstanceDatasetMapper"]
