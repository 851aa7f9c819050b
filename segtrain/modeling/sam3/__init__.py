"""SAM 3 family: the official SAM 3 image model (``Sam3Image``, config node ``MODEL.SAM3``) with
its parts under their official module names (``vitdet``, ``necks``, ``text_encoder_ve``,
``tokenizer_ve`` with the BPE vocabulary shipped in the package, ``geometry_encoders``,
``encoder``, ``decoder``, ``maskformer_segmentation``, ``model_misc``, ``vl_combiner``), its
processor (``build_image_processor``) and the adapter between segtrain's find inputs and the
model (``find_adapter``). Importing this package registers them."""

from .config import add_sam3_config
from .geometry_encoders import Prompt
from .sam3_image import FindStage, Sam3Image, build_sam3_image_model
from .sam3_image_processor import Sam3Processor, build_image_processor, predict_instances
from .text_encoder_ve import TextTransformer, VETextEncoder
from .tokenizer_ve import DEFAULT_BPE_PATH, SimpleTokenizer

__all__ = [
    "add_sam3_config",
    "Sam3Image",
    "FindStage",
    "Prompt",
    "build_sam3_image_model",
    "Sam3Processor",
    "build_image_processor",
    "predict_instances",
    "SimpleTokenizer",
    "DEFAULT_BPE_PATH",
    "TextTransformer",
    "VETextEncoder",
]
