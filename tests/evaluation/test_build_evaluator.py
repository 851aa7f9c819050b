"""build_evaluator: TEST.EVALUATOR, else metadata evaluator_type; one-line errors."""

import pytest

from segtrain.config import get_cfg
from segtrain.data.catalog import MetadataCatalog
from segtrain.evaluation import COCOEvaluator, DatasetEvaluators, SemSegEvaluator, build_evaluator
from segtrain.utils.errors import ConfigError, UnknownNameError


def test_from_evaluator_type_and_config(tiny_coco, tmp_path):
    name, _, _ = tiny_coco
    cfg = get_cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    ev = build_evaluator(cfg, name, output_dir=str(tmp_path))
    assert isinstance(ev, COCOEvaluator) and ev._max_dets == 50 and ev._output_dir == str(tmp_path)
    cfg.TEST.EVALUATOR = "SemSegEvaluator"
    assert isinstance(build_evaluator(cfg, name, output_dir=str(tmp_path)), SemSegEvaluator)
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    assert build_evaluator(cfg, name)._output_dir == str(tmp_path / "run" / "inference")
    # several names run together, their results merged
    cfg.TEST.EVALUATOR = ("COCOEvaluator", "SemSegEvaluator")
    both = build_evaluator(cfg, name)
    assert isinstance(both, DatasetEvaluators)
    assert [type(e) for e in both._evaluators] == [COCOEvaluator, SemSegEvaluator]
    cfg.TEST.EVALUATOR = ()
    assert isinstance(build_evaluator(cfg, name), COCOEvaluator)  # from the metadata again


def test_unknown_names_are_one_line_errors(tiny_coco, coco_tools):
    name, _, _ = tiny_coco
    cfg = get_cfg()
    cfg.TEST.EVALUATOR = "COCOEvaluater"
    with pytest.raises(UnknownNameError) as e:
        build_evaluator(cfg, name)
    msg = str(e.value)
    assert "TEST.EVALUATOR" in msg and "'COCOEvaluator'" in msg and "SemSegEvaluator" in msg and "\n" not in msg

    cfg.TEST.EVALUATOR = ""
    other = "_test_unknown_type"
    coco_tools.register(other, evaluator_type="cityscapes_instance")
    with pytest.raises(UnknownNameError, match="evaluator_type 'cityscapes_instance'.*COCOEvaluator"):
        build_evaluator(cfg, other)
    MetadataCatalog.get("_test_no_type")
    with pytest.raises(ConfigError, match="'_test_no_type' has no evaluator_type.*set TEST.EVALUATOR"):
        build_evaluator(cfg, "_test_no_type")
