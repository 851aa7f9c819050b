from .build import *  # noqa
from .backbone import Backbone  # noqa: F401
from .resnet import (  # noqa: F401  (importing registers build_resnet_backbone)
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
    build_resnet_backbone,
    convert_torchvision_resnet_state_dict,
    is_torchvision_resnet_state_dict,
)
