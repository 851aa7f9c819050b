"""``DatasetCatalog`` (the DATASET registry: name -> zero-argument loader) and
``MetadataCatalog`` (name -> ``Metadata``).

The catalog stores recipes, not data: nothing is read until ``DatasetCatalog.get``.
"""

import logging
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from segtrain.utils.errors import DatasetError, SegtrainError, UnknownNameError
from segtrain.utils.registry import format_suggestions

__all__ = [
    "DatasetCatalog",
    "MetadataCatalog",
    "DATASET_REGISTRY",
    "Metadata",
    "MetadataAttributeError",
    "thing_classes_of",
    "catalogs_restored",
]

logger = logging.getLogger(__name__)


class _DatasetCatalog:
    """Name -> function returning ``list[dict]`` in the dataset-dict format of CONTRACTS.md."""

    def __init__(self) -> None:
        self._funcs: Dict[str, Callable[[], List[dict]]] = {}

    def register(self, name: str, func: Optional[Callable[[], List[dict]]] = None):
        """Register ``func`` (no arguments) under ``name``; also usable as a decorator,
        ``@DatasetCatalog.register("my_ds")``. Registering a name twice is an error."""
        if func is None:

            def deco(f):
                self.register(name, f)
                return f

            return deco
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}, ...) needs a callable, got {type(func).__name__}")
        if name in self._funcs:
            raise DatasetError(f"dataset {name!r} is already registered; call DatasetCatalog.remove({name!r}) first")
        self._funcs[name] = func
        return func

    def _lookup(self, name: str) -> Callable[[], List[dict]]:
        try:
            return self._funcs[name]
        except KeyError:
            names = sorted(self._funcs)
            raise UnknownNameError(
                f"dataset {name!r} is not registered.{format_suggestions(name, names)} "
                f"Registered: {', '.join(names) if names else '(none)'}"
            ) from None

    def get(self, name: str) -> List[dict]:
        """Call the loader of ``name`` and return its list of dataset dicts."""
        dicts = self._lookup(name)()
        if not isinstance(dicts, list):
            raise DatasetError(
                f"the loader of dataset {name!r} returned {type(dicts).__name__}, expected a list of dicts"
            )
        return dicts

    def list(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._funcs)

    names = list

    def remove(self, name: str) -> None:
        self._lookup(name)
        del self._funcs[name]

    def snapshot(self) -> Dict[str, Callable[[], List[dict]]]:
        """A copy of the registrations (name -> loader) for ``restore``."""
        return dict(self._funcs)

    def restore(self, snapshot: Dict[str, Callable[[], List[dict]]]) -> None:
        """Make the registrations exactly ``snapshot``: names registered since are removed, and
        names removed or replaced since get their loader of then back (the same function)."""
        self._funcs.clear()
        self._funcs.update(snapshot)

    def __contains__(self, name: str) -> bool:
        return name in self._funcs

    def __repr__(self) -> str:
        return f"DatasetCatalog(registered: {', '.join(self.list())})"


class MetadataAttributeError(SegtrainError, AttributeError):
    """A metadata attribute that the dataset does not have (also an ``AttributeError``,
    so ``getattr(meta, key, default)`` and ``hasattr`` work)."""


class Metadata:
    """Per-dataset facts with attribute access: ``thing_classes``, ``thing_colors``,
    ``thing_dataset_id_to_contiguous_id``, ``json_file``, ``image_root``, ``evaluator_type``..."""

    def __init__(self, name: str = "", **kwargs: Any):
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        have = sorted(k for k in self.__dict__ if k != "name")
        raise MetadataAttributeError(
            f"metadata of dataset {self.__dict__.get('name', '')!r} has no attribute {key!r}. "
            f"Available: {', '.join(have) if have else '(none)'}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name":
            raise DatasetError(f"the name of metadata {self.name!r} cannot be changed")
        old = self.__dict__.get(key, _MISSING)
        if old is not _MISSING and not _same(old, value):
            raise DatasetError(
                f"metadata {key!r} of dataset {self.name!r} is already {_short(old)}; cannot set it to "
                f"{_short(value)} (MetadataCatalog.remove({self.name!r}) to start over)"
            )
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes; returns ``self``. Changing an existing value is an error."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({', '.join(f'{k}={_short(v)}' for k, v in self.__dict__.items())})"


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays; treat identity as equality
        return a is b


def _short(v: Any, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class _MetadataCatalog:
    """Name -> ``Metadata``; ``get`` creates an empty one on first use."""

    def __init__(self) -> None:
        self._meta: Dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._meta:
            self._meta[name] = Metadata(name=name)
        return self._meta[name]

    def list(self) -> List[str]:
        return sorted(self._meta)

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)

    def snapshot(self) -> Dict[str, Tuple[Metadata, Dict[str, Any]]]:
        """name -> (the ``Metadata`` object, a copy of its attributes) for ``restore``."""
        return {name: (meta, dict(meta.__dict__)) for name, meta in self._meta.items()}

    def restore(self, snapshot: Dict[str, Tuple[Metadata, Dict[str, Any]]]) -> None:
        """Make the entries exactly ``snapshot``: entries created since are removed, removed or
        replaced ones come back as the same object, and attributes set since are undone."""
        self._meta.clear()
        for name, (meta, attributes) in snapshot.items():
            meta.__dict__.clear()
            meta.__dict__.update(attributes)
            self._meta[name] = meta

    def __contains__(self, name: str) -> bool:
        return name in self._meta


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
# The DATASET registry of SPEC.md is the dataset catalog itself.
DATASET_REGISTRY = DatasetCatalog


@contextmanager
def catalogs_restored() -> Iterator[None]:
    """Undo at the end of the block every dataset registration and metadata change made in it
    (added names removed, removed or replaced ones put back as the same loader / object)."""
    datasets, metadata = DatasetCatalog.snapshot(), MetadataCatalog.snapshot()
    try:
        yield
    finally:
        DatasetCatalog.restore(datasets)
        MetadataCatalog.restore(metadata)


def thing_classes_of(name: str) -> Optional[List[str]]:
    """The ``thing_classes`` of dataset ``name``, or None. A dataset whose reader sets them when
    it reads (a COCO json, a Roboflow export) is read for them once they are asked for."""
    classes = MetadataCatalog.get(name).get("thing_classes")
    if classes is None and name in DatasetCatalog:
        DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).get("thing_classes")
    return None if classes is None else list(classes)
