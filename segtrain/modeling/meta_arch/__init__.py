"""Meta-architectures (importing this package registers them)."""
from .build import *  # noqa
from .mask_former import MaskFormer  # noqa: F401
from .mask_former_head import MaskFormerHead  # noqa: F401
from .concept_detector import ConceptDetector  # noqa: F401
from .video_tracker import VideoTracker  # noqa: F401
