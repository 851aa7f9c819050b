"""Checks shared by the annotation loaders (COCO images, YouTube-VIS videos): the bad-annotation
policy, JSON reading, category tables and segmentation checks, each problem one line naming
the file and the item at fault.

Bad annotations follow a policy: "error" (raise ``DatasetError``) or "skip" (drop the bad
item, log a count). Loaders registered at import have no config, so the policy is read
from a context variable that the loader builders set from ``DATASETS.ON_BAD_ANNOTATION``
(``with bad_annotation_policy("skip"): ...``), or passed explicitly.
"""

import contextlib
import contextvars
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from segtrain.utils.errors import ConfigError, DatasetError

__all__ = [
    "BAD_ANNOTATION_POLICIES",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "check_policy",
    "SkipCounts",
    "count_skipped",
    "ProblemLog",
    "read_json_file",
    "is_int",
    "check_top_level",
    "parse_categories",
    "checked_annotations",
    "check_segmentation",
]

_logger = logging.getLogger(__name__)

BAD_ANNOTATION_POLICIES = ("error", "skip")
_POLICY: contextvars.ContextVar = contextvars.ContextVar("segtrain_bad_annotation_policy", default="error")
_COUNTS: contextvars.ContextVar = contextvars.ContextVar("segtrain_skip_counts", default=None)


def check_policy(policy: str) -> str:
    """``policy`` when it is one of ``BAD_ANNOTATION_POLICIES``, else a ``ConfigError``."""
    if policy not in BAD_ANNOTATION_POLICIES:
        raise ConfigError(
            f"DATASETS.ON_BAD_ANNOTATION must be one of {', '.join(BAD_ANNOTATION_POLICIES)}; got {policy!r}"
        )
    return policy


@contextlib.contextmanager
def bad_annotation_policy(policy: str) -> Iterator[None]:
    """Within the block, loaders treat bad annotations by ``policy`` ("error" / "skip")."""
    token = _POLICY.set(check_policy(policy))
    try:
        yield
    finally:
        _POLICY.reset(token)


def get_bad_annotation_policy() -> str:
    """The policy in effect ("error" unless a ``bad_annotation_policy`` block says otherwise)."""
    return _POLICY.get()


class SkipCounts:
    """Items dropped by the loaders under the "skip" policy: ``images`` (images or videos)
    and ``annotations``."""

    def __init__(self) -> None:
        self.images = 0
        self.annotations = 0


@contextlib.contextmanager
def count_skipped() -> Iterator[SkipCounts]:
    """Within the block, every ``ProblemLog`` adds what it skipped to the yielded counts
    (the loader builders use it to report dropped images next to the evaluated ones)."""
    counts = SkipCounts()
    token = _COUNTS.set(counts)
    try:
        yield counts
    finally:
        _COUNTS.reset(token)


class ProblemLog:
    """Raise the first problem ("error") or count them all ("skip") for one annotation file.
    ``report(msg, image=True)`` counts a dropped image / video, else a dropped annotation."""

    def __init__(self, json_file: str, policy: str, logger: Optional[logging.Logger] = None):
        self.json_file, self.policy = json_file, check_policy(policy)
        self.logger = logger or _logger
        self.bad_annotations = 0
        self.bad_images = 0
        self.first: Optional[str] = None

    def report(self, msg: str, image: bool = False) -> None:
        full = f"{self.json_file}: {msg}"
        if self.policy == "error":
            raise DatasetError(full)
        if image:
            self.bad_images += 1
        else:
            self.bad_annotations += 1
        if self.first is None:
            self.first = full
        self.logger.debug("skipped: %s", full)

    def log_summary(self, image_word: str = "image") -> None:
        """One warning with the counts (nothing when all was well); adds them to ``count_skipped``."""
        counts = _COUNTS.get()
        if counts is not None:
            counts.images += self.bad_images
            counts.annotations += self.bad_annotations
        if self.bad_annotations or self.bad_images:
            self.logger.warning(
                "Skipped %d bad annotation(s) and %d bad %s(s) in %s (DATASETS.ON_BAD_ANNOTATION='skip'); first: %s",
                self.bad_annotations,
                self.bad_images,
                image_word,
                self.json_file,
                self.first,
            )


def read_json_file(json_file: str, what: str = "annotation") -> Any:
    """The parsed JSON of ``json_file``; a missing, malformed or non-UTF-8 file is a one-line
    ``DatasetError`` with the line and column (under either policy: nothing of it can be used)."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"{what} file not found: {json_file!r}")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{json_file}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_file}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def is_int(v: Any) -> bool:
    """True for Python / numpy integers, False for bools and everything else."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_top_level(json_file: str, data: Any, keys: Tuple[str, ...], kind: str) -> None:
    """``data`` must be an object holding the list ``keys`` (fatal under either policy)."""
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: top level must be a JSON object, got {type(data).__name__}")
    for key in keys:
        if key not in data:
            raise DatasetError(f"{json_file}: missing required key {key!r} (a {kind} file needs {', '.join(keys)})")
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_file}: {key!r} must be a list, got {type(data[key]).__name__}")


def parse_categories(json_file: str, categories: List[Any]) -> Tuple[Dict[int, str], Dict[int, int], str]:
    """``(names_by_id, id_map, valid)`` from a 'categories' list: names by dataset id, dataset id
    -> contiguous id in sorted-id order, and the valid ids as text for messages. Problems are
    fatal under either policy: every annotation depends on the categories."""
    names_by_id: Dict[int, str] = {}
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{json_file}: category #{k} needs keys 'id' and 'name', got {cat!r}")
        if not is_int(cat["id"]):
            raise DatasetError(f"{json_file}: category {cat['name']!r} has a non-integer id {cat['id']!r}")
        if cat["id"] in names_by_id:
            raise DatasetError(f"{json_file}: category id {cat['id']} is used twice")
        names_by_id[int(cat["id"])] = str(cat["name"])
    if not names_by_id:
        raise DatasetError(f"{json_file}: 'categories' is empty")
    cat_ids = sorted(names_by_id)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    valid = ", ".join(map(str, cat_ids[:20])) + (", ..." if len(cat_ids) > 20 else "")
    return names_by_id, id_map, valid


def checked_annotations(
    problems: ProblemLog,
    annotations: List[Any],
    *,
    required: Tuple[str, ...],
    parent_key: str,
    parents: Dict[Any, Any],
    all_parent_ids: set,
    id_map: Dict[int, int],
    valid_categories: str,
    seen_ids: set,
) -> Iterator[Tuple[Dict[str, Any], Any, Any, int]]:
    """The entries of 'annotations' that pass the checks common to every format, as
    ``(annotation, id, parent id, contiguous category)``: an object with the ``required``
    keys, an id not in ``seen_ids`` (the caller adds the ids it keeps), a known parent
    (``parent_key``: "image_id" / "video_id", looked up in ``parents``) and a known category.
    Failing entries are reported; those whose parent was dropped are skipped silently (the
    parent was reported)."""
    parent_word = parent_key[: -len("_id")]
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            problems.report(f"annotation #{k} is not a JSON object")
            continue
        aid = ann.get("id", f"#{k}")
        missing = [key for key in required if key not in ann]
        if missing:
            problems.report(
                f"annotation id {aid}: missing required key(s) {', '.join(missing)} (required: {', '.join(required)})"
            )
            continue
        if aid in seen_ids:
            raise DatasetError(f"{problems.json_file}: annotation id {aid} is used twice")
        pid = ann[parent_key]
        if isinstance(pid, (list, dict)) or pid not in parents:
            if isinstance(pid, (list, dict)) or pid not in all_parent_ids:
                problems.report(f"annotation id {aid}: {parent_key} {pid!r} is not in '{parent_word}s'")
            continue
        cid = ann["category_id"]
        if isinstance(cid, (list, dict)) or cid not in id_map:
            problems.report(
                f"{parent_word} id {pid} annotation id {aid}: unknown category_id {cid!r} (valid: {valid_categories})"
            )
            continue
        yield ann, aid, pid, id_map[cid]


def check_segmentation(segm: Any, height: int, width: int) -> Optional[str]:
    """None when ``segm`` is a valid polygon list or RLE of an image (height, width),
    else what is wrong."""
    if isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            return f"RLE segmentation needs 'size' and 'counts', has {sorted(segm)}"
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(is_int(s) for s in size)):
            return f"RLE 'size' must be [height, width], got {size!r}"
        if [int(size[0]), int(size[1])] != [height, width]:
            return f"RLE size {list(size)} differs from the image size [{height}, {width}]"
        if not isinstance(segm["counts"], (str, bytes, list)):
            return f"RLE 'counts' must be a string or a list of ints, got {type(segm['counts']).__name__}"
        if isinstance(segm["counts"], list) and sum(segm["counts"]) != height * width:
            return f"uncompressed RLE counts sum to {sum(segm['counts'])}, expected {height}*{width}"
        return None
    if isinstance(segm, list):
        if len(segm) == 0:
            return "empty polygon list"
        if not all(isinstance(p, (list, tuple)) for p in segm):
            return "segmentation must be a list of polygons [[x0, y0, x1, y1, ...], ...] or an RLE dict"
        for k, poly in enumerate(segm):
            if len(poly) % 2 != 0:
                return f"polygon {k} has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"polygon {k} has {len(poly) // 2} point(s); at least 3 are needed"
            try:
                arr = np.asarray(poly, dtype=np.float64)
            except (TypeError, ValueError):
                return f"polygon {k} holds non-numeric coordinates"
            if not np.isfinite(arr).all():
                return f"polygon {k} holds a NaN or infinite coordinate"
        return None
    return f"segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}"
