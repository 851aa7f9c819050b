"""The registries are importable from ``segtrain.modeling`` (as in Detectron2) and hold every
built-in component; each family registers its own parts on import."""

from segtrain.modeling import (
    BACKBONE_REGISTRY,
    CRITERION_REGISTRY,
    MATCHER_REGISTRY,
    META_ARCH_REGISTRY,
    PIXEL_DECODER_REGISTRY,
    build_model,
)


def test_every_built_in_component_is_registered():
    assert {"MaskFormer", "VideoTracker", "Sam3Image"} <= set(META_ARCH_REGISTRY.names())
    assert {"build_resnet_backbone", "build_tiny_conv_backbone"} <= set(BACKBONE_REGISTRY.names())
    assert {"SetCriterion", "Sam3LossWrapper", "MultiStepMultiMasksAndIous", "VideoSimpleCriterion"} <= set(
        CRITERION_REGISTRY.names()
    )
    assert {"HungarianMatcher", "BinaryHungarianMatcherV2", "BinaryOneToManyMatcher"} <= set(MATCHER_REGISTRY.names())
    assert {"BasePixelDecoder", "MSDeformAttnPixelDecoder"} <= set(PIXEL_DECODER_REGISTRY.names())
    assert callable(build_model)


def test_family_classes_come_from_their_folders():
    for name, package in (("MaskFormer", "mask2former"), ("VideoTracker", "sam2"), ("Sam3Image", "sam3")):
        assert META_ARCH_REGISTRY.get(name).__module__.startswith(f"segtrain.modeling.{package}."), name
