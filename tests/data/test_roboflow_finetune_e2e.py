r"""End to end on a CPU, as a user fine-tunes SAM 3 on a Roboflow export: the built-in shapes
written in Roboflow layout (category 0 the super-category, an empty image per split),
registered with ``register_roboflow_coco``; ``projects/sam3/tiny.yaml`` (shrunk by the shared
test overrides) first trained briefly on ``shapes_train``, its checkpoint then the
``MODEL.WEIGHTS`` of a fine-tuning run on ``<name>_train`` evaluated on ``<name>_valid`` with
both metric sets (COCO AP with absent-concept detections as false positives; cgF1 / IL_MCC /
pmF1), saved, and resumed exactly (the losses after the resume equal the uninterrupted run's).

The same run from the command line (docs/sam3.md, "End to end on a CPU"):

    python tools/write_roboflow_shapes.py --output-dir datasets/roboflow_shapes
    python tools/train_net.py --config-file projects/sam3/tiny.yaml
    python tools/train_net.py --config-file projects/sam3/tiny.yaml \
        DATASETS.ROBOFLOW.ROOT datasets/roboflow_shapes DATASETS.TRAIN "('roboflow_train',)" \
        DATASETS.TEST "('roboflow_valid',)" \
        MODEL.WEIGHTS output/sam3_tiny/model_final.pth SOLVER.MAX_ITER 40 SOLVER.STEPS "()" \
        SOLVER.WARMUP_ITERS 0 SOLVER.CHECKPOINT_PERIOD 20 OUTPUT_DIR output/sam3_tiny_roboflow
    (then the same command with --resume before the overrides and a larger SOLVER.MAX_ITER)
"""

import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.data import DatasetCatalog, MetadataCatalog, register_roboflow_coco
from segtrain.data.datasets import write_roboflow_shapes
from segtrain.engine import DefaultTrainer
from segtrain.engine.hooks import CallbackHook
from segtrain.utils.env import seed_all_rng
from tests.modeling.sam3.conftest import TINY_PRESET_TEST

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "sam3", "tiny.yaml")
NAME = "_test_rf_e2e"
SPLITS = [f"{NAME}_{s}" for s in ("train", "valid", "test")]
SIZE_32 = [
    "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 32, "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 32,
    "DATASETS.SHAPES.IMAGE_SIZE", 32,
]  # fmt: skip


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_file(TINY)
    cfg.merge_from_list(TINY_PRESET_TEST + SIZE_32 + list(overrides))
    cfg.freeze()
    return cfg


class _Killed(RuntimeError):
    pass


def _run(cfg, resume=False, kill_after=None):
    """Train ``cfg``; returns the trainer, the evaluation results and ``{iteration: core_loss}``."""
    seed_all_rng(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    losses = {}

    def record(t):
        losses[t.iter] = t.storage.latest()["core_loss"][0]
        if kill_after is not None and t.iter == kill_after:
            raise _Killed(f"simulated kill after iteration {kill_after}")

    trainer.register_hooks([CallbackHook(after_step=record)])
    if kill_after is not None:
        with pytest.raises(_Killed):
            trainer.train()
        return trainer, None, losses
    return trainer, trainer.train(), losses


@pytest.fixture
def roboflow_shapes(tmp_path):
    root = write_roboflow_shapes(str(tmp_path / "roboflow"), num_train=6, num_valid=3, num_test=2, image_size=32)
    register_roboflow_coco(NAME, root)
    return root


@pytest.mark.slow
def test_fine_tune_from_weights_evaluate_save_and_resume_exactly(roboflow_shapes, tmp_path, tmp_datasets_root):
    # a first short run on the built-in shapes gives the weights to fine-tune from
    first = _cfg("SOLVER.MAX_ITER", 2, "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path / "first"))
    _run(first)
    weights = str(tmp_path / "first" / "model_final.pth")
    assert os.path.isfile(weights)

    fine_tune = [
        "MODEL.WEIGHTS", weights, "DATASETS.TRAIN", (SPLITS[0],),
        "DATASETS.TEST", (SPLITS[1],), "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2,
    ]  # fmt: skip
    full_cfg = _cfg(*fine_tune, "OUTPUT_DIR", str(tmp_path / "full"))
    trainer, results, full_losses = _run(full_cfg)
    assert trainer.model.class_names == list(MetadataCatalog.get(SPLITS[0]).thing_classes)
    assert trainer.model.class_names[0] == "shapes" and len(trainer.model.class_names) == 7
    # the fine-tuning starts from the first run's weights
    start = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    loaded = DefaultTrainer(full_cfg)
    loaded.resume_or_load(resume=False)
    state = loaded.model.state_dict()
    assert set(state) == set(start) and all(torch.equal(state[k], start[k]) for k in start)

    # both metric sets: every (image, category) pair of the valid split is a find
    num_valid = len(DatasetCatalog.get(SPLITS[1]))
    assert results["presence"]["num_finds"] == num_valid * 7
    for task in ("bbox", "segm"):
        # absent concepts' detections are false positives in the RF100 / ODinW AP, not in the positive one
        assert 0.0 <= results[task]["AP"] <= results[f"{task}_positive"]["AP"] + 1e-9
        saco = results[f"cgF1_{task}"]
        assert {"cgF1", "IL_MCC", "positive_micro_F1", "IL_F1"} <= set(saco)
        assert -1.0 <= saco["IL_MCC"] <= 1.0 and 0.0 <= saco["cgF1"] <= 100.0
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth"} <= set(os.listdir(tmp_path / "full"))

    # killed after iteration 2 (one past the checkpoint at 1), then resumed: the same losses
    killed_cfg = _cfg(*fine_tune, "OUTPUT_DIR", str(tmp_path / "killed"), "DATASETS.TEST", ())
    _, _, before = _run(killed_cfg, kill_after=2)
    assert open(tmp_path / "killed" / "last_checkpoint").read() == "model_0000001.pth"
    resumed, _, after = _run(killed_cfg, resume=True)
    assert resumed.start_iter == 2 and sorted(after) == [2, 3]
    assert [before[i] for i in (0, 1, 2)] == [full_losses[i] for i in (0, 1, 2)]
    assert [after[i] for i in (2, 3)] == [full_losses[i] for i in (2, 3)]
    for (name, a), b in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
