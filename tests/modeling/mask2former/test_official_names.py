"""The R50 COCO model has exactly the official Mask2Former state_dict: every name and shape
of tests/modeling/mask2former/data/m2f_r50_param_names.txt, nothing more, nothing less, so an
official checkpoint loads with no missing or unexpected keys (docs/mask2former.md)."""

import os

import pytest
import torch

from segtrain.config import load_config
from segtrain.modeling.mask2former import MaskFormer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "m2f_r50_param_names.txt")


def _expected():
    out = {}
    with open(NAMES_FILE) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, shape = line.split()
            out[name] = tuple(int(s) for s in shape.split("x"))
    return out


@pytest.fixture(scope="module")
def r50_model():
    return _build_on_meta()


def _build_on_meta():
    cfg = load_config(os.path.join(ROOT, "projects", "m2f", "r50_coco.yaml"))
    # on the meta device: names and shapes without spending time on 44M initial values
    with torch.device("meta"):
        return MaskFormer(cfg)


def test_state_dict_names_and_shapes_are_official(r50_model):
    expected = _expected()
    assert len(expected) == 558
    got = {k: tuple(v.shape) for k, v in r50_model.state_dict().items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    assert not missing, f"{len(missing)} official keys missing, e.g. {missing[:5]}"
    assert not unexpected, f"{len(unexpected)} keys not in official checkpoints, e.g. {unexpected[:5]}"
    wrong = [(k, got[k], expected[k]) for k in expected if got[k] != expected[k]]
    assert not wrong, f"shape mismatches: {wrong[:5]}"


def test_parameter_count_is_the_official_44m(r50_model):
    n = sum(p.numel() for p in r50_model.parameters())
    # FrozenBN statistics are buffers, so the count is the official one (about 44.0M)
    assert n == pytest.approx(43_970_257, rel=0.01)


def test_official_style_state_dict_loads_strictly(r50_model):
    # A dict without version metadata (as read from an official .pkl / .pth) loads with
    # strict=True: no renames needed, none applied by the version-1 upgrade hooks.
    state = {k: torch.zeros(s) for k, s in _expected().items()}
    model = _build_on_meta().to_empty(device="cpu")
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_panoptic_config_differs_only_in_the_class_head():
    """projects/m2f/r50_coco_panoptic.yaml: the same official names and shapes, with a class
    head for 133 classes + no-object (an official panoptic checkpoint loads as the instance one)."""
    cfg = load_config(os.path.join(ROOT, "projects", "m2f", "r50_coco_panoptic.yaml"))
    with torch.device("meta"):
        model = MaskFormer(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _expected()
    assert set(got) == set(expected)
    differ = {k: got[k] for k in expected if got[k] != expected[k]}
    assert differ == {
        "sem_seg_head.predictor.class_embed.weight": (134, 256),
        "sem_seg_head.predictor.class_embed.bias": (134,),
        "criterion.empty_weight": (134,),
    }
    assert model.panoptic_on and model.semantic_on and model.instance_on
