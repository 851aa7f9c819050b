"""SAM 3 training on one find batch: ``Sam3Image`` in training mode with its config-built
``Sam3LossWrapper`` gives the official training's loss values and gradients.

``data/training_parity_official.pt`` was made once with facebookresearch/sam3 (commit in its
``source``): two seeded 112 px uint8 images with rectangle / disc objects of three classes (one
object with no valid mask) and five finds (each image's categories in ``finds``; one absent
concept per image, i.e. a presence negative), run through the official data path (``Datapoint``
-> ``ToTensorAPI`` -> ``NormalizeAPI(0.5, 0.5)`` -> ``collate_fn_api(with_seg_masks=True)``);
the official ``Sam3Image`` at the reduced sizes of ``test_sam3_image.py`` (dropout and drop path
0, weights ``conftest.fill_seeded(seed=13)``) in training mode with ``BinaryHungarianMatcherV2``
(focal, costs 2 / 5 / 2) as its matcher, the targets ``back_convert``-ed as the official trainer
does, and the official ``Sam3LossWrapper`` with the RF100 / ODinW fine-tuning settings (Boxes
5 / 2, IABCEMdetr 20 / 20 with presence, pos_weight 10, pad_n_queries 200; o2m matcher alpha
0.3, threshold 0.4, top-k 4, o2m weight 2, no o2m matcher on aux) plus the config's Masks piece
(200 / 10, no aux), global normalization in a one-process gloo group and
``scale_by_find_batch_size``; then ``core_loss.backward()``. The official focal loss runs as a
Triton kernel; on that CPU machine its per-element formula was evaluated in torch instead. The
fixture stores the inputs, every loss entry, a sum per state-dict tensor (to check the seeded
weights) and the gradients of a few parameters.
"""

import os

import pytest
import torch

from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.structures.instances import Instances

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def official():
    return torch.load(os.path.join(DATA, "training_parity_official.pt"), weights_only=True)


def find_inputs(official):
    """The fixture's images, objects and finds as ``FindDatasetMapper`` dicts."""
    size = official["sizes"]["img_size"]
    batch = []
    for i, objects in enumerate(official["objects"]):
        inst = Instances(
            (size, size),
            gt_classes=torch.tensor([o["category"] for o in objects]),
            gt_boxes=torch.stack([o["box_xyxy"] for o in objects]),
        )
        inst.gt_masks = torch.stack([o["mask"] for o in objects])
        inst.gt_mask_valid = torch.tensor([o["mask_valid"] for o in objects])
        batch.append(
            {
                "image": official["images"][i],
                "instances": inst,
                "height": size,
                "width": size,
                "image_id": i,
                "find_categories": torch.tensor(official["finds"][i]),
            }
        )
    return batch


@pytest.fixture(scope="module")
def trained_step(official, tiny_sam3_cfg, seeded):
    """segtrain's losses on the fixture batch (after ``backward``) and the model."""
    model = build_model(tiny_sam3_cfg("MODEL.SAM3.DROPOUT", 0.0, "MODEL.SAM3.VIT.DROP_PATH_RATE", 0.0))
    seeded(model, seed=official["seed"])
    model.class_names = list(official["class_names"])
    model.train()
    losses = model(find_inputs(official))
    losses[CORE_LOSS_KEY].backward()
    return model, losses


def test_the_seeded_weights_are_the_official_ones(official, tiny_sam3_cfg, seeded):
    model = build_model(tiny_sam3_cfg())
    seeded(model, seed=official["seed"])
    sums = {k: float(v.double().sum()) for k, v in model.state_dict().items() if v.is_floating_point()}
    assert sums.keys() == official["state_dict_sums"].keys()
    for key, expected in official["state_dict_sums"].items():
        assert sums[key] == pytest.approx(expected, rel=1e-6, abs=1e-6), key


def test_the_criterion_has_the_official_fine_tuning_settings(trained_step):
    criterion = trained_step[0].criterion
    assert type(criterion).__name__ == "Sam3LossWrapper"
    assert [type(f).__name__ for f in criterion.loss_fns_find] == ["Boxes", "IABCEMdetr", "Masks"]
    assert criterion.normalization == "global" and criterion.o2m_weight == 2.0
    assert criterion.scale_by_find_batch_size and not criterion.use_o2m_matcher_on_o2m_aux


def test_every_loss_entry_equals_the_official_training(official, trained_step):
    _, losses = trained_step
    expected = official["losses"]
    assert set(expected) <= set(losses), sorted(set(expected) - set(losses))
    # the batch exercises every part: o2o and o2m, aux layers, masks, presence negatives
    for key in ("loss_mask", "loss_dice_o2m", "loss_giou_aux_0_o2m", "presence_loss_aux_0"):
        assert float(expected[key]) > 0, key
    for key, value in expected.items():
        actual, want = float(losses[key].detach()), float(value)
        assert actual == pytest.approx(want, rel=1e-4, abs=1e-7), f"{key}: segtrain {actual} official {want}"


def test_gradients_equal_the_official_training(official, trained_step):
    model, _ = trained_step
    params = dict(model.named_parameters())
    for name, expected in official["grads"].items():
        grad = params[name].grad
        assert grad is not None, name
        scale = float(expected.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(grad, expected, atol=1e-4 * scale, rtol=0, msg=name)
