"""``Sam3LossWrapper``: SAM 3's find-batch criterion (matching, deep supervision, one-to-many).

It visits every prediction set of a find batch (main output, ``aux_outputs``, ``first_stage``
and their one-to-many ``_o2m`` copies), matches each to the packed targets, runs the loss
pieces of :mod:`.sam3_loss_fns` on it and adds their ``core_loss``. No process group is ever
needed: "global" normalization averages the box count through ``segtrain.utils.comm``.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError
from segtrain.utils.loss_trends import register_moving_target

from ..matcher.build import MATCHER_REGISTRY
from .build import CORE_LOSS_KEY, CRITERION_REGISTRY
from .sam3_loss_fns import SAM3_LOSS_REGISTRY, LossWithWeights
from .sam3_masks import Masks

__all__ = ["Sam3LossWrapper", "CORE_LOSS_FINAL_KEY", "CORE_LOSS_AUX_KEY", "O2M_MATCHES_KEY"]


CORE_LOSS_FINAL_KEY = CORE_LOSS_KEY + "_final"
CORE_LOSS_AUX_KEY = CORE_LOSS_KEY + "_aux"
# A metric (no weight): one-to-many matches per ground-truth box. The _o2m losses are sums over
# these matches divided by the box count, so they grow with it while the predictions improve.
O2M_MATCHES_KEY = "o2m_matches_per_box"
_NORMALIZATIONS = ("global", "local", "none")
# Matchers that take Mask2Former per-image targets and cannot match finds.
_NON_FIND_MATCHERS = ("HungarianMatcher",)


def _build_find_matcher(cfg, name: str, key: str):
    """The MATCHER ``name`` (from config key ``key``), which must be a find (packed-target) matcher."""
    cls = MATCHER_REGISTRY.get(name)
    fmt = getattr(cls, "target_format", None)
    if name in _NON_FIND_MATCHERS or (fmt is not None and fmt != "find_packed"):
        finds = [
            n
            for n in MATCHER_REGISTRY.names()
            if getattr(MATCHER_REGISTRY.get(n), "target_format", None) == "find_packed"
        ]
        raise ConfigError(
            f"{key}={name!r} is not a find matcher (Sam3LossWrapper needs packed find targets and returns "
            f"(batch_idx, src_idx, tgt_idx)); set {key} to one of: {', '.join(finds) or 'BinaryHungarianMatcherV2'}"
        )
    return cls(cfg)


@CRITERION_REGISTRY.register()
class Sam3LossWrapper(nn.Module):
    """SAM 3 loss over find stages.

    loss_fns_find: the loss pieces (:class:`LossWithWeights`), run in order on every output.
    normalization: ``"global"`` (box count averaged over processes, the local count in a single
        process, clamped >= 1), ``"local"`` (clamped >= 1) or ``"none"`` (1).
    matcher: one-to-one find matcher, used when an output carries no precomputed ``indices``
        (and for aux ``_o2m`` outputs when ``use_o2m_matcher_on_o2m_aux`` is False).
    o2m_matcher, o2m_weight: matcher of the ``*_o2m`` outputs and the factor on their core loss.
    loss_fn_semantic_seg: optional callable ``(outputs, targets) -> dict with core_loss``.
    normalize_by_valid_object_num: count only target boxes with w > 0 and h > 0.
    normalize_by_stage_num: divide each step's core loss by the number of stages.
    scale_by_find_batch_size: multiply each step's core loss by ``sqrt(B)``.

    ``num_boxes`` = ``sum(num_boxes)`` (see above); per output set with suffix ``s``
    (``""`` main, ``_aux_{i}``, ``_fs``) and each piece ``f``:
    ``core += f(out).core_loss`` and, when ``pred_logits_o2m`` exists,
    ``core += o2m_weight * f(out_o2m).core_loss`` (``Masks`` only if the o2m output has masks).
    Components are returned as ``{key}{s}`` (unweighted) and ``{key}{s}_o2m`` (times
    ``o2m_weight``, as the official wrapper logs them; their weighted sum is the o2m core, so
    ``core_loss`` equals the official one up to float round-off). Extra summaries (detached):
    ``core_loss_final`` (main output's one-to-one total) and ``core_loss_aux`` (aux, first-stage
    and o2m totals), after the per-step scaling; with a semantic loss,
    ``core_loss = core_loss_final + core_loss_aux + semantic core``.
    """

    target_format = "find_packed"
    # the default pieces' needs; instances hold the union of their own pieces' keys
    required_output_keys = ("pred_logits", "pred_boxes", "pred_masks")

    @configurable
    def __init__(
        self,
        loss_fns_find: Sequence[LossWithWeights],
        normalization: str = "global",
        matcher: Optional[nn.Module] = None,
        o2m_matcher: Optional[nn.Module] = None,
        o2m_weight: float = 1.0,
        use_o2m_matcher_on_o2m_aux: bool = True,
        loss_fn_semantic_seg: Optional[nn.Module] = None,
        normalize_by_valid_object_num: bool = False,
        normalize_by_stage_num: bool = False,
        scale_by_find_batch_size: bool = False,
    ):
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ConfigError(
                f"Sam3LossWrapper: normalization={normalization!r} is not valid; "
                f"use one of {', '.join(_NORMALIZATIONS)}"
            )
        self.loss_fns_find = (
            nn.ModuleList(list(loss_fns_find))
            if all(isinstance(f, nn.Module) for f in loss_fns_find)
            else list(loss_fns_find)
        )
        self.normalization = normalization
        self.matcher = matcher
        self.o2m_matcher = o2m_matcher
        self.o2m_weight = float(o2m_weight)
        self.use_o2m_matcher_on_o2m_aux = bool(use_o2m_matcher_on_o2m_aux)
        self.loss_fn_semantic_seg = loss_fn_semantic_seg
        self.normalize_by_valid_object_num = bool(normalize_by_valid_object_num)
        self.normalize_by_stage_num = bool(normalize_by_stage_num)
        self.scale_by_find_batch_size = bool(scale_by_find_batch_size)
        keys: List[str] = []
        for f in self.loss_fns_find:
            for k in getattr(f, "required_output_keys", ()):
                if k not in keys:
                    keys.append(k)
        self.required_output_keys = tuple(keys)
        seen: Dict[str, str] = {}
        for f in self.loss_fns_find:
            for k in getattr(f, "computed_keys", ()):
                if k in seen:
                    raise ConfigError(
                        f"Sam3LossWrapper: loss pieces {seen[k]} and {type(f).__name__} both compute {k!r}; "
                        "their logged components would overwrite each other"
                    )
                seen[k] = type(f).__name__

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Pieces from ``MODEL.CRITERION.SAM3.LOSS_FNS`` (SAM3_LOSS registry, each from its own
        node), the matcher from ``MODEL.MATCHER.NAME`` and the o2m matcher from
        ``MODEL.CRITERION.SAM3.O2M_MATCHER_NAME`` (empty: none).

        Both matchers must be find matchers (``target_format == "find_packed"``). The
        Mask2Former ``HungarianMatcher`` (the global default of ``MODEL.MATCHER.NAME``) is refused
        with a one-line ``ConfigError`` rather than silently replaced: it would ignore the
        configured SAM 3 costs either way, and an explicit ``MODEL.MATCHER.NAME
        BinaryHungarianMatcherV2`` (as the SAM 3 project config sets) keeps the config honest.
        """
        c = cfg.MODEL.CRITERION.SAM3
        loss_fns = [SAM3_LOSS_REGISTRY.get(name)(cfg) for name in c.LOSS_FNS]
        matcher = _build_find_matcher(cfg, cfg.MODEL.MATCHER.NAME, "MODEL.MATCHER.NAME")
        o2m = (
            _build_find_matcher(cfg, c.O2M_MATCHER_NAME, "MODEL.CRITERION.SAM3.O2M_MATCHER_NAME")
            if c.O2M_MATCHER_NAME
            else None
        )
        return {
            "loss_fns_find": loss_fns,
            "normalization": c.NORMALIZATION,
            "matcher": matcher,
            "o2m_matcher": o2m,
            "o2m_weight": c.O2M_WEIGHT,
            "use_o2m_matcher_on_o2m_aux": c.USE_O2M_MATCHER_ON_O2M_AUX,
            "normalize_by_valid_object_num": c.NORMALIZE_BY_VALID_OBJECT_NUM,
            "normalize_by_stage_num": c.NORMALIZE_BY_STAGE_NUM,
            "scale_by_find_batch_size": c.SCALE_BY_FIND_BATCH_SIZE,
        }

    # ------------------------------------------------------------------ pieces
    def _get_num_boxes(self, targets: Mapping[str, Tensor]) -> Tensor:
        """The box-count normalizer (a float scalar tensor)."""
        if self.normalize_by_valid_object_num:
            boxes = targets["boxes"].reshape(-1, 4)
            num = (boxes[:, 2:] > 0).all(dim=-1).sum().float()
        else:
            num = targets["num_boxes"].sum().float()
        if self.normalization == "global":
            return torch.clamp(comm.all_reduce_mean(num), min=1)
        if self.normalization == "local":
            return torch.clamp(num, min=1)
        return torch.ones((), device=num.device)

    def _match(self, matcher, name: str, out, targets, **kw):
        if matcher is None:
            raise ConfigError(
                f"Sam3LossWrapper: an output has no precomputed 'indices' and {name} is None; "
                f"pass {name}= (e.g. BinaryHungarianMatcherV2) or put 'indices' in the outputs"
            )
        return matcher(out, targets, **kw)

    def compute_loss(self, nested_out: Mapping[str, Any], targets: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Losses of one step: every output set, matched and scored by every piece.

        Returns the suffixed components, ``core_loss``, ``core_loss_final`` and ``core_loss_aux``;
        for each output with one-to-many queries also ``o2m_matches_per_box<suffix>`` (a metric).
        """
        num_boxes = self._get_num_boxes(targets)
        o2m_out_is_valid = nested_out.get("o2m_out_is_valid")
        o2m_target_is_valid_padded = nested_out.get("o2m_target_is_valid_padded")

        output_list = [(nested_out, "", False)]
        for i, aux in enumerate(nested_out.get("aux_outputs") or []):
            output_list.append((aux, f"_aux_{i}", True))
        if nested_out.get("first_stage") is not None:
            output_list.append((nested_out["first_stage"], "_fs", True))

        losses: Dict[str, Tensor] = {}
        total: Union[Tensor, float] = 0.0
        final: Union[Tensor, float] = 0.0
        for out, suffix, is_aux in output_list:
            indices = out.get("indices")
            if indices is None:
                indices = self._match(self.matcher, "matcher", out, targets)
            has_o2m = "pred_logits_o2m" in out
            if has_o2m:
                o2m_out = {k[: -len("_o2m")]: v for k, v in out.items() if k.endswith("_o2m")}
                use_o2m = self.use_o2m_matcher_on_o2m_aux or not is_aux
                o2m_indices = self._match(
                    self.o2m_matcher if use_o2m else self.matcher,
                    "o2m_matcher" if use_o2m else "matcher",
                    o2m_out,
                    targets,
                    out_is_valid=o2m_out_is_valid,
                    target_is_valid_padded=o2m_target_is_valid_padded,
                )
                num_o2m = torch.as_tensor(float(o2m_indices[0].numel()), device=num_boxes.device)
                losses[f"{O2M_MATCHES_KEY}{suffix}"] = num_o2m / num_boxes
            for loss_fn in self.loss_fns_find:
                l_dict = dict(
                    loss_fn(outputs=out, targets=targets, indices=indices, num_boxes=num_boxes, is_aux=is_aux)
                )
                core = l_dict.pop(CORE_LOSS_KEY)
                total = total + core
                if not suffix:
                    final = final + core
                losses.update({f"{k}{suffix}": v for k, v in l_dict.items()})

                run_o2m = has_o2m and getattr(loss_fn, "supports_o2m_loss", True)
                if isinstance(loss_fn, Masks):
                    run_o2m = run_o2m and "pred_masks" in o2m_out
                if run_o2m:
                    l_dict = dict(
                        loss_fn(
                            outputs=o2m_out, targets=targets, indices=o2m_indices, num_boxes=num_boxes, is_aux=is_aux
                        )
                    )
                    # as the official wrapper: every o2m entry times o2m_weight; the core from the
                    # scaled components, so that each logged tensor is the one core_loss is built from
                    core = l_dict.pop(CORE_LOSS_KEY)
                    scaled = {k: v * self.o2m_weight for k, v in l_dict.items()}
                    total = total + (loss_fn.reduce_loss(scaled) if scaled else self.o2m_weight * core)
                    losses.update({f"{k}{suffix}_o2m": v for k, v in scaled.items()})

        total = total if torch.is_tensor(total) else torch.tensor(float(total), device=num_boxes.device)
        final_t = final if torch.is_tensor(final) else torch.tensor(float(final), device=total.device)
        losses[CORE_LOSS_KEY] = total
        losses[CORE_LOSS_FINAL_KEY] = final_t.detach()
        losses[CORE_LOSS_AUX_KEY] = (total - final_t).detach()
        return losses

    # ------------------------------------------------------------------ entry
    @staticmethod
    def _as_stages(find_stages, find_targets):
        """Normalize the inputs to ``(list of lists of step dicts, list of target dicts)``."""
        if isinstance(find_stages, Mapping):  # one outputs dict
            if not isinstance(find_targets, Mapping):
                raise TypeError(
                    "Sam3LossWrapper: with a single outputs dict, find_targets must be a single targets dict, "
                    f"got {type(find_targets).__name__}"
                )
            return [[find_stages]], [find_targets]
        loss_stages = getattr(find_stages, "loss_stages", None)
        stages = list(find_stages)
        targets = [find_targets] if isinstance(find_targets, Mapping) else list(find_targets)
        if loss_stages is not None:
            targets = [targets[i] for i in loss_stages]
        if len(stages) != len(targets):
            raise ValueError(
                f"Sam3LossWrapper: {len(stages)} find stages but {len(targets)} find targets; "
                "give one targets dict per stage"
            )
        steps = [[s] if isinstance(s, Mapping) else list(s) for s in stages]
        return steps, targets

    def forward(self, find_stages, find_targets) -> Dict[str, Tensor]:
        """Sum of the losses of every step of every stage.

        find_stages: a list of stages, each an outputs dict or a list of step outputs dicts
            that share the stage's targets; or a single outputs dict (then ``find_targets`` is a
            single targets dict).
        find_targets: a list of targets dicts, one per stage (or one dict).
        Per step: ``compute_loss`` (+ the semantic loss); its ``core_loss`` (and the two
        summaries) divided by the number of stages when ``normalize_by_stage_num``, times
        ``sqrt(B)`` when ``scale_by_find_batch_size``; all keys summed over steps.
        """
        stages, targets_list = self._as_stages(find_stages, find_targets)
        num_stages = len(stages)
        total: Dict[str, Tensor] = {}
        for stage_outputs, targets in zip(stages, targets_list):
            for outputs in stage_outputs:
                cur = self.compute_loss(outputs, targets)
                if self.loss_fn_semantic_seg is not None:
                    sem = dict(self.loss_fn_semantic_seg(outputs, targets))
                    cur[CORE_LOSS_KEY] = cur[CORE_LOSS_KEY] + sem.pop(CORE_LOSS_KEY)
                    overlap = set(cur) & set(sem)
                    if overlap:
                        raise ValueError(
                            f"Sam3LossWrapper: semantic loss keys overlap the find loss keys: {sorted(overlap)}"
                        )
                    cur.update(sem)
                for k in (CORE_LOSS_KEY, CORE_LOSS_FINAL_KEY, CORE_LOSS_AUX_KEY):
                    if self.normalize_by_stage_num:
                        cur[k] = cur[k] / num_stages
                    if self.scale_by_find_batch_size:
                        cur[k] = cur[k] * math.sqrt(int(targets["num_boxes"].shape[0]))
                for k, v in cur.items():
                    total[k] = v if k not in total else total[k] + v
        if CORE_LOSS_KEY not in total:
            total[CORE_LOSS_KEY] = torch.zeros(())
        return total


# the one-to-many terms sum over more matches per box as the predictions improve
register_moving_target(r"^loss_\w+?(?P<suffix>(_aux_\d+)?)_o2m$", O2M_MATCHES_KEY + "{suffix}")
