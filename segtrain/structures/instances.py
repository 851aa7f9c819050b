"""``Instances``: per-image fields of equal length (targets or predictions)."""

import itertools
import logging
from typing import Any, Dict, List, Tuple, Union

import torch

__all__ = ["Instances"]

logger = logging.getLogger(__name__)


class Instances:
    """N objects of one image, each field indexed by object.

    ``image_size``: (H, W). Fields are set as attributes (``inst.gt_classes = t``) or with
    ``set``; each is a Tensor [N, ...], a list of length N, or any object with ``__len__``
    and ``__getitem__`` (and ``cat`` for ``Instances.cat``). All fields share the same N.
    Typical fields: ``gt_classes`` int64 [N], ``gt_boxes`` float32 [N, 4] XYXY,
    ``gt_masks`` bool [N, H, W]; ``pred_*`` and ``scores`` for predictions.
    """

    def __init__(self, image_size: Tuple[int, int], **fields: Any):
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: Dict[str, Any] = {}
        for k, v in fields.items():
            self.set(k, v)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(H, W) of the image these objects belong to."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails; guard private names so copy/pickle work
        if name.startswith("_") or name not in self.__dict__.get("_fields", {}):
            fields = ", ".join(self.__dict__.get("_fields", {})) or "(none)"
            raise AttributeError(f"Instances has no field {name!r}; fields: {fields}")
        return self._fields[name]

    def __getstate__(self) -> Dict[str, Any]:
        return {"_image_size": self._image_size, "_fields": self._fields}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setattr__("_image_size", state["_image_size"])
        super().__setattr__("_fields", state["_fields"])

    def set(self, name: str, value: Any) -> None:
        """Set field ``name``; its length must equal that of the existing fields."""
        n = len(value)
        others = [k for k in self._fields if k != name]
        if others and n != len(self._fields[others[0]]):
            raise ValueError(
                f"Instances field {name!r} has length {n}, but the other fields have {len(self._fields[others[0]])}"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        if name not in self._fields:
            raise AttributeError(f"Instances has no field {name!r}; fields: {', '.join(self._fields) or '(none)'}")
        del self._fields[name]

    def get(self, name: str) -> Any:
        return getattr(self, name)

    def get_fields(self) -> Dict[str, Any]:
        """The field dict itself (modifying it modifies this object)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """A new ``Instances`` with every field that has ``.to`` moved/cast (``Tensor.to`` args)."""
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            out.set(k, v)
        return out

    def __getitem__(self, item: Union[int, slice, torch.Tensor, List[int]]) -> "Instances":
        """Index every field: an int (kept as a length-1 ``Instances``), a slice, a bool mask
        [N] or an int64 index tensor / list."""
        if isinstance(item, int):
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} out of range for {n} objects")
            item = item % n
            item = slice(item, item + 1)
        elif isinstance(item, list):
            item = torch.as_tensor(item, dtype=torch.bool if item and isinstance(item[0], bool) else torch.long)
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            if isinstance(v, list) and not isinstance(item, slice):
                idx = item
                if idx.dtype == torch.bool:
                    idx = idx.nonzero().flatten()
                v = [v[int(i)] for i in idx]
            else:
                v = v[item]
            out.set(k, v)
        return out

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    def __iter__(self):
        raise NotImplementedError("Instances is not iterable; index it or read its fields")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenate ``Instances`` of the same image size and the same fields."""
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        if len(instance_lists) == 1:
            return instance_lists[0]
        first = instance_lists[0]
        for other in instance_lists[1:]:
            if other.image_size != first.image_size:
                raise ValueError(f"Instances.cat: image sizes differ ({first.image_size} vs {other.image_size})")
            if set(other._fields) != set(first._fields):
                raise ValueError(f"Instances.cat: fields differ ({sorted(first._fields)} vs {sorted(other._fields)})")
        out = Instances(first.image_size)
        for k, v0 in first._fields.items():
            values = [i._fields[k] for i in instance_lists]
            if isinstance(v0, torch.Tensor):
                v = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                v = list(itertools.chain(*values))
            elif hasattr(type(v0), "cat"):
                v = type(v0).cat(values)
            else:
                raise ValueError(f"Instances.cat: cannot concatenate field {k!r} of type {type(v0).__name__}")
            out.set(k, v)
        return out

    def __repr__(self) -> str:
        parts = []
        for k, v in self._fields.items():
            desc = f"Tensor{list(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__
            parts.append(f"{k}: {desc}")
        return (
            f"Instances(num_instances={len(self)}, image_height={self._image_size[0]}, "
            f"image_width={self._image_size[1]}, fields=[{', '.join(parts)}])"
        )
