"""TRANSFORMER_DECODER registry and builder."""

from segtrain.utils.registry import Registry

__all__ = ["TRANSFORMER_DECODER_REGISTRY"]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """Transformer decoders: class(cfg, in_channels, mask_classification) -> module
producing pred_logits / pred_masks / aux_outputs."""
