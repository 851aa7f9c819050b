"""``ConceptPromptEncoder``: a concept (category) id -> its prompt tokens."""

import torch
from torch import Tensor, nn

__all__ = ["ConceptPromptEncoder"]


class ConceptPromptEncoder(nn.Module):
    """Learned prompt tokens per concept, standing in for SAM 3's encoded text prompt.

    num_concepts: K; num_tokens: T tokens per concept; dim: C.
    forward(concepts int64 [B] in [0, K)) -> [B, T, C] (LayerNorm-ed).
    """

    def __init__(self, num_concepts: int, num_tokens: int, dim: int):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"ConceptPromptEncoder: num_tokens must be >= 1, got {num_tokens}")
        self.num_concepts = int(num_concepts)
        self.num_tokens = int(num_tokens)
        self.concept_embed = nn.Embedding(num_concepts * num_tokens, dim)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.concept_embed.weight, std=1.0)

    def forward(self, concepts: Tensor) -> Tensor:
        if concepts.numel() and (int(concepts.min()) < 0 or int(concepts.max()) >= self.num_concepts):
            bad = concepts[(concepts < 0) | (concepts >= self.num_concepts)][0]
            raise ValueError(f"concept id {int(bad)} outside [0, {self.num_concepts}) (MODEL.CONCEPT.NUM_CONCEPTS)")
        idx = concepts[:, None] * self.num_tokens + torch.arange(self.num_tokens, device=concepts.device)
        return self.norm(self.concept_embed(idx))
