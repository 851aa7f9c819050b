"""Reference forms of segtrain computations: the straightforward algorithms (official code
structure, per-image and per-layer loops) that the tests and ``tools/benchmark.py`` compare
segtrain's production paths against. Nothing here is imported by ``segtrain``.

- :mod:`tests.reference.ms_deform_attn`: the official multi-scale deformable attention
  (one ``grid_sample`` per level) and a module that uses it;
- :mod:`tests.reference.hungarian`: the per-image Hungarian matching loop and the two-pass
  binary cross-entropy cost it evaluates;
- :mod:`tests.reference.set_criterion`: Mask2Former's ``SetCriterion`` as a per-prediction,
  per-image loop.
"""

from .hungarian import batch_sigmoid_ce_loss_two_pass, hungarian_match_per_image
from .ms_deform_attn import ReferenceMSDeformAttn, ms_deform_attn_reference
from .set_criterion import ReferenceSetCriterion

__all__ = [
    "ReferenceMSDeformAttn",
    "ReferenceSetCriterion",
    "batch_sigmoid_ce_loss_two_pass",
    "hungarian_match_per_image",
    "ms_deform_attn_reference",
]
