"""SAM 3's text encoder: a causal CLIP-style text transformer and a linear resizer to d_model.

Parameter names follow the official ``sam3/model/text_encoder_ve.py`` (``encoder.token_embedding``,
``encoder.positional_embedding``, ``encoder.transformer.resblocks.{i}.{ln_1,attn,ln_2,mlp}``,
``encoder.ln_final``, ``encoder.text_projection``, ``resizer``), so the released weights load as
they are under ``backbone.language_backbone``.
"""

from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ResidualAttentionBlock", "Transformer", "TextTransformer", "VETextEncoder"]


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; x is [B, L, width]."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        mlp_ratio: float = 4.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = norm_layer(d_model)
        self.ln_2 = norm_layer(d_model)
        mlp_width = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(d_model, mlp_width), gelu=act_layer(), c_proj=nn.Linear(mlp_width, d_model))
        )

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(x.dtype)
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``layers`` residual attention blocks; activation checkpointing in training when asked."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        use_act_checkpoint: bool = False,
    ):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = use_act_checkpoint
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act_layer, norm_layer) for _ in range(layers)]
        )

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask=attn_mask)
        return x


class TextTransformer(nn.Module):
    """Token embedding + learned positions, causal transformer, final LayerNorm.

    ``forward(text)`` with token ids [B, L] returns the per-token features [B, L, width] (the
    official model with ``pool_type="none"`` and ``output_tokens=True`` uses only these; the
    pooled projection through ``text_projection`` is kept as a parameter for the checkpoint).
    """

    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        mlp_ratio: float = 4.0,
        output_dim: int = 512,
        no_causal_mask: bool = False,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        use_ln_post: bool = True,
        use_act_checkpoint: bool = False,
    ):
        super().__init__()
        self.num_pos = self.context_length = context_length
        self.vocab_size = vocab_size
        self.width = width
        self.output_dim = output_dim
        self.heads = heads
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act_layer, norm_layer, use_act_checkpoint)
        self.ln_final = norm_layer(width) if use_ln_post else nn.Identity()
        causal_mask = None if no_causal_mask else self.build_causal_mask()
        self.register_buffer("attn_mask", causal_mask, persistent=False)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        self.init_parameters()

    def init_parameters(self) -> None:
        # CLIP's initialization (the official module leaves these two uninitialized).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.width**-0.5)

    def build_causal_mask(self) -> Tensor:
        """Additive mask [L, L]: -inf above the diagonal."""
        return torch.full((self.num_pos, self.num_pos), float("-inf")).triu_(1)

    def forward(self, text: Tensor) -> Tensor:
        seq_len = text.shape[1]
        if seq_len > self.num_pos:
            raise ValueError(f"text encoder: {seq_len} tokens exceed its context_length {self.num_pos}")
        x = self.token_embedding(text) + self.positional_embedding[:seq_len]
        attn_mask = None if self.attn_mask is None else self.attn_mask[:seq_len, :seq_len]
        x = self.transformer(x, attn_mask=attn_mask)
        return self.ln_final(x)


class VETextEncoder(nn.Module):
    """Tokenizes prompts and encodes them for the fusion encoder.

    ``forward(text)`` with a list of B prompts returns, in the official (sequence-first) layout:
    ``text_attention_mask`` [B, L] (True at padding), ``text_memory_resized`` [L, B, d_model]
    and ``inputs_embeds`` [L, B, width] (the token embeddings before the transformer), with
    L = ``context_length``. An already encoded ``(mask, memory, {"inputs_embeds": ...})`` tuple
    is passed through.
    """

    def __init__(
        self,
        d_model: int,
        tokenizer: Callable,
        width: int = 1024,
        heads: int = 16,
        layers: int = 24,
        context_length: int = 32,
        vocab_size: int = 49408,
        use_ln_post: bool = True,
        use_act_checkpoint: bool = True,
    ):
        super().__init__()
        self.context_length = context_length
        self.use_ln_post = use_ln_post
        self.tokenizer = tokenizer
        self.encoder = TextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            use_ln_post=use_ln_post,
            use_act_checkpoint=use_act_checkpoint,
        )
        self.resizer = nn.Linear(width, d_model)

    def forward(
        self,
        text: Union[Sequence[str], Tuple[Tensor, Tensor, dict]],
        input_boxes: Optional[List] = None,
        device: Optional[torch.device] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        if input_boxes is not None and len(input_boxes) > 0:
            raise ValueError("text encoder: input_boxes are not supported")
        if len(text) > 0 and isinstance(text[0], str):
            device = self.resizer.weight.device if device is None else device
            tokenized = self.tokenizer(list(text), context_length=self.context_length).to(device)  # [B, L]
            inputs_embeds = self.encoder.token_embedding(tokenized)  # [B, L, width]
            text_memory = self.encoder(tokenized)  # [B, L, width]
            text_attention_mask = tokenized == 0
            text_memory_resized = self.resizer(text_memory.transpose(0, 1))  # [L, B, d_model]
        elif isinstance(text, tuple) and len(text) == 3:
            text_attention_mask, text_memory_resized, tokenized = text
            inputs_embeds = tokenized["inputs_embeds"]
        else:
            raise TypeError(f"text encoder: expected a list of prompts (str) or an encoded triple, got {text!r:.80}")
        return text_attention_mask, text_memory_resized, inputs_embeds.transpose(0, 1)
