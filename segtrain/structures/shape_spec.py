"""``ShapeSpec``: the channels / size / stride of a feature map, passed between components."""

from typing import NamedTuple, Optional

__all__ = ["ShapeSpec"]


class ShapeSpec(NamedTuple):
    """Shape of one feature map (any field may be ``None`` when unknown).

    ``channels``: C; ``height`` / ``width``: spatial size (rarely known in advance);
    ``stride``: input pixels per feature pixel (4 for ``res2``, 32 for ``res5``).
    A NamedTuple (as in Detectron2) so it is hashable, immutable and cheap to log.
    """

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None
