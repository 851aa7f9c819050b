from .build import *  # noqa
from .fpn import BasePixelDecoder  # noqa: F401  (importing registers it)
from .msdeformattn import MSDeformAttnPixelDecoder  # noqa: F401
