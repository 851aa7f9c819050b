"""SAM 3-style concept detector family: the ``ConceptDetector`` meta-architecture, concept
prompt tokens, the fusion encoder, two-stage proposals, the DETR-style decoder with box
refinement and a presence token, the scoring / presence / mask heads and its config node
(``MODEL.CONCEPT``); and the official SAM 3 image model (``Sam3Image``, ``MODEL.SAM3``) with its parts under
their official module names (``vitdet``, ``necks``, ``text_encoder_ve``, ``tokenizer_ve`` with
the BPE vocabulary shipped in the package, ``geometry_encoders``, ``encoder``, ``decoder``,
``maskformer_segmentation``, ``model_misc``, ``vl_combiner``). Importing this package registers them."""

from .box_ops import box_sine_embed, inverse_sigmoid
from .concept_decoder import ConceptDecoder, ConceptDecoderLayer, group_attention_mask
from .concept_detector import ConceptDetector
from .config import add_concept_config, add_sam3_config
from .fusion_encoder import FusionEncoder, FusionEncoderLayer
from .geometry_encoders import Prompt
from .head import ConceptHead
from .heads import DotProductScoring, MaskHead, PresenceHead
from .prompt_encoder import ConceptPromptEncoder
from .proposals import EncoderProposals, grid_anchors
from .sam3_image import FindStage, Sam3Image, build_sam3_image_model
from .sam3_image_processor import Sam3Processor, build_image_processor, predict_instances
from .text_encoder_ve import TextTransformer, VETextEncoder
from .tokenizer_ve import DEFAULT_BPE_PATH, SimpleTokenizer

__all__ = [
    "ConceptDetector",
    "add_concept_config",
    "ConceptHead",
    "ConceptPromptEncoder",
    "FusionEncoder",
    "FusionEncoderLayer",
    "ConceptDecoder",
    "ConceptDecoderLayer",
    "group_attention_mask",
    "EncoderProposals",
    "grid_anchors",
    "DotProductScoring",
    "PresenceHead",
    "MaskHead",
    "inverse_sigmoid",
    "box_sine_embed",
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
