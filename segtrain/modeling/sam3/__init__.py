"""SAM 3-style concept detector family: the ``ConceptDetector`` meta-architecture, concept
prompt tokens, the fusion encoder, two-stage proposals, the DETR-style decoder with box
refinement and a presence token, the scoring / presence / mask heads and its config node
(``MODEL.CONCEPT``). Importing this package registers them."""

from .box_ops import box_sine_embed, inverse_sigmoid
from .concept_detector import ConceptDetector
from .config import add_concept_config
from .decoder import ConceptDecoder, ConceptDecoderLayer, group_attention_mask
from .fusion_encoder import FusionEncoder, FusionEncoderLayer
from .head import ConceptHead
from .heads import DotProductScoring, MaskHead, PresenceHead
from .prompt_encoder import ConceptPromptEncoder
from .proposals import EncoderProposals, grid_anchors

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
]
