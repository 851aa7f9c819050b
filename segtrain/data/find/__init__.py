"""Finds (image + concept prompt) from any instance dataset, for the SAM 3-style concept
detector: ``FindSampler`` picks each image's concepts (present ones plus sampled absent
ones as presence negatives), ``FindDatasetMapper`` (MAPPER registry) reads and augments the
image, ``collate_find_targets`` packs the targets of a batch (docs/losses.md, SAM 3);
``register_find_query_json`` reads SA-Co-style per-image text queries."""

from . import config as _config  # noqa: F401  (registers the config keys)
from .collate import FindBatch, collate_find_targets, find_batch_from_inputs
from .mapper import FindDatasetMapper
from .query_json import load_find_query_json, register_find_query_json
from .sampler import FindSampler

__all__ = [
    "FindSampler",
    "FindDatasetMapper",
    "FindBatch",
    "collate_find_targets",
    "find_batch_from_inputs",
    "load_find_query_json",
    "register_find_query_json",
]
