"""Optimizer parameter groups: per-part learning rates, layer-wise LR decay, and which
parameters take weight decay.

Every trainable parameter gets

* an LR multiplier of ``BASE_LR``: the first ``SOLVER.LR_MULTIPLIERS`` pattern its full name
  matches (``fnmatch``, e.g. ``["image_encoder.*", 0.6]``), else ``SOLVER.BACKBONE_MULTIPLIER``
  under ``backbone.``, else 1;
* times a layer-wise decay factor when it lies under ``SOLVER.LAYER_DECAY.APPLY_TO`` (a module with
  ``blocks``, e.g. a ViT or Hiera trunk): ``VALUE ** (num_layers + 1 - layer_id)`` where the
  embeddings are layer 0, ``blocks.i`` is layer ``i + 1`` and anything else is the top
  (factor 1), the rule of BEiT and of the SAM 2 / SAM 3 optimizers; the module's own
  ``get_layer_id(name)`` / ``get_num_layers()`` are used when it has them; a name matching an
  ``OVERRIDES`` pattern takes that factor instead;
* a weight decay by kind: names matching ``SOLVER.NO_WEIGHT_DECAY_NAMES`` (e.g. ``*bias*``) none,
  parameters of norm layers ``WEIGHT_DECAY_NORM`` (``SOLVER.WEIGHT_DECAY_NORM_TYPES`` limits which
  norm classes count), embeddings ``WEIGHT_DECAY_EMBED``, the rest ``WEIGHT_DECAY``.

Parameters with the same LR and weight decay share one group.
"""

import fnmatch
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from segtrain.utils.errors import ConfigError

__all__ = ["LayerDecay", "get_default_optimizer_params", "layer_decay_from_config", "lr_multipliers_from_config"]

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)
_EMBED_NAME_KEYS = ("query_feat", "query_embed", "level_embed")
# "pos" as the start of a name part (pos_embed, absolute_pos_embed, position_embedding) but
# not "post..." or words that merely contain it (transpose, compose)
_POS_RE = re.compile(r"(^|[._])pos(?!t)")
# layer 0 of the layer-wise decay: what comes before the first block
_INPUT_NAME_KEYS = ("pos_embed", "patch_embed", "cls_token", "ln_pre")


def _is_norm(module: nn.Module, norm_types: Sequence[str]) -> bool:
    if norm_types:
        return type(module).__name__ in norm_types
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def _is_embed(module: nn.Module, param_name: str) -> bool:
    return (
        isinstance(module, nn.Embedding)
        or any(k in param_name for k in _EMBED_NAME_KEYS)
        or _POS_RE.search(param_name) is not None
    )


@dataclass
class LayerDecay:
    """Layer-wise LR decay over the blocks of the module at ``apply_to`` (see the module doc)."""

    value: float
    apply_to: str
    overrides: List[Tuple[str, float]] = field(default_factory=list)

    def scales(self, model: nn.Module, names: Sequence[str]) -> Dict[str, float]:
        """LR factor of each of ``names`` (full parameter names of ``model``) under ``apply_to``."""
        try:
            trunk = model.get_submodule(self.apply_to)
        except AttributeError as e:
            raise ConfigError(f"SOLVER.LAYER_DECAY.APPLY_TO: the model has no module {self.apply_to!r}") from e
        if hasattr(trunk, "get_num_layers") and hasattr(trunk, "get_layer_id"):
            num_blocks, layer_id = trunk.get_num_layers(), trunk.get_layer_id
        elif isinstance(getattr(trunk, "blocks", None), nn.ModuleList):
            num_blocks, layer_id = len(trunk.blocks), lambda name: _layer_id(name, len(trunk.blocks))
        else:
            raise ConfigError(
                f"SOLVER.LAYER_DECAY.APPLY_TO: module {self.apply_to!r} ({type(trunk).__name__}) has no "
                f"'blocks' list and no get_layer_id / get_num_layers"
            )
        top = num_blocks + 1
        out = {}
        for name in names:
            if not name.startswith(self.apply_to + "."):
                continue
            override = next((v for p, v in self.overrides if fnmatch.fnmatchcase(name, p)), None)
            out[name] = float(override) if override is not None else self.value ** (top - min(layer_id(name), top))
        return out


def _layer_id(name: str, num_blocks: int) -> int:
    """0 for the input embeddings, ``i + 1`` for ``blocks.i``, ``num_blocks + 1`` otherwise."""
    if "rel_pos" in name:
        return num_blocks + 1
    if any(k in name for k in _INPUT_NAME_KEYS):
        return 0
    if "blocks" in name:
        return int(name.split("blocks")[1].split(".")[1]) + 1
    return num_blocks + 1


def _pairs(key: str, value) -> List[Tuple[str, float]]:
    """``[[pattern, number], ...]`` from a config value, or a ``ConfigError`` naming ``key``."""
    out = []
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"{key}: each entry must be [name_pattern, number], got {item!r}")
        try:
            out.append((item[0], float(item[1])))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}: {item[1]!r} in {item!r} is not a number") from e
    return out


def lr_multipliers_from_config(cfg) -> List[Tuple[str, float]]:
    return _pairs("SOLVER.LR_MULTIPLIERS", cfg.SOLVER.LR_MULTIPLIERS)


def layer_decay_from_config(cfg) -> Optional[LayerDecay]:
    """``SOLVER.LAYER_DECAY`` as a ``LayerDecay``; None when it is off (``VALUE`` 1 or no ``APPLY_TO``)."""
    c = cfg.SOLVER.LAYER_DECAY
    if float(c.VALUE) == 1.0 or not c.APPLY_TO:
        return None
    if not 0.0 < float(c.VALUE) <= 1.0:
        raise ConfigError(f"SOLVER.LAYER_DECAY.VALUE must be in (0, 1], got {c.VALUE}")
    return LayerDecay(float(c.VALUE), c.APPLY_TO, _pairs("SOLVER.LAYER_DECAY.OVERRIDES", c.OVERRIDES))


def get_default_optimizer_params(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float = 1.0,
    lr_multipliers: Sequence[Tuple[str, float]] = (),
    layer_decay: Optional[LayerDecay] = None,
    no_weight_decay_names: Sequence[str] = (),
    weight_decay_norm_types: Sequence[str] = (),
) -> List[Dict]:
    """Param groups as the module doc says. Each group carries ``name`` (``part/kind``, with
    ``/layer<scale>`` under layer decay), ``lr``, ``weight_decay``, ``params`` and
    ``param_names``. Frozen parameters are left out."""
    wd_of = {"default": weight_decay, "norm": weight_decay_norm, "embed": weight_decay_embed, "no_decay": 0.0}
    entries = []
    seen = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            if any(fnmatch.fnmatchcase(full, pat) for pat in no_weight_decay_names):
                kind = "no_decay"
            elif _is_norm(module, weight_decay_norm_types):
                kind = "norm"
            else:
                kind = "embed" if _is_embed(module, full) else "default"
            part, mult = next(((pat, m) for pat, m in lr_multipliers if fnmatch.fnmatchcase(full, pat)), (None, None))
            if part is None:
                part = "backbone" if full.startswith("backbone.") else "head"
                mult = backbone_multiplier if part == "backbone" else 1.0
            entries.append((full, p, part, kind, mult))
    scales = layer_decay.scales(model, [e[0] for e in entries]) if layer_decay else {}

    groups: "OrderedDict[str, Dict]" = OrderedDict()
    for full, p, part, kind, mult in entries:
        key = f"{part}/{kind}"
        if full in scales:
            key += f"/layer{scales[full]:.4g}"
        if key not in groups:
            lr = base_lr * mult * scales.get(full, 1.0)
            groups[key] = {"name": key, "lr": lr, "weight_decay": wd_of[kind], "params": [], "param_names": []}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(full)
    return list(groups.values())
