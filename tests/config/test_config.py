"""Config: defaults, _BASE_ chains, overrides, one-line errors naming the key."""

import textwrap

import pytest

import segtrain.modeling  # noqa: F401  (registers the criterion and family config nodes)
from segtrain.config import CfgNode, get_cfg, load_config, register_config_addition
from segtrain.config.cfg_node import CONFIG_ADDITIONS
from segtrain.utils.errors import ConfigError


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_official_loss_defaults():
    cfg = get_cfg()
    sc = cfg.MODEL.CRITERION.SET_CRITERION
    assert dict(sc.WEIGHT_DICT) == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    assert sc.EOS_COEF == 0.1 and sc.NUM_POINTS == 12544
    sam3 = cfg.MODEL.CRITERION.SAM3
    assert dict(sam3.IABCE.WEIGHT_DICT) == {"loss_ce": 20.0, "presence_loss": 20.0}
    assert dict(sam3.BOXES.WEIGHT_DICT) == {"loss_bbox": 5.0, "loss_giou": 2.0}
    assert dict(sam3.MASKS.WEIGHT_DICT) == {"loss_mask": 200.0, "loss_dice": 10.0}
    assert dict(cfg.MODEL.CRITERION.MULTISTEP.WEIGHT_DICT) == {
        "loss_mask": 20.0,
        "loss_dice": 1.0,
        "loss_iou": 1.0,
        "loss_class": 1.0,
    }


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR != 123.0


def test_base_chain_and_overrides(tmp_path):
    _write(
        tmp_path / "base.yaml",
        """
        SOLVER:
          BASE_LR: 0.5
          MAX_ITER: 10
        """,
    )
    child = _write(
        tmp_path / "child.yaml",
        """
        _BASE_: base.yaml
        SOLVER:
          MAX_ITER: 20
        """,
    )
    cfg = load_config(child, ["SOLVER.IMS_PER_BATCH", "8", "MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_ce", "3.0"])
    assert cfg.SOLVER.BASE_LR == 0.5  # from the base
    assert cfg.SOLVER.MAX_ITER == 20  # child wins
    assert cfg.SOLVER.IMS_PER_BATCH == 8  # command line wins
    assert cfg.MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_ce == 3.0


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    bad = _write(
        tmp_path / "bad.yaml",
        """
        SOLVER:
          BASE_LRR: 0.1
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert "\n" not in msg
    assert "bad.yaml" in msg and "SOLVER.BASE_LRR" in msg and "SOLVER.BASE_LR" in msg


def test_unknown_nested_weight_key(tmp_path):
    bad = _write(
        tmp_path / "bad.yaml",
        """
        MODEL:
          CRITERION:
            SET_CRITERION:
              WEIGHT_DICT:
                loss_dic: 1.0
        """,
    )
    with pytest.raises(ConfigError, match="WEIGHT_DICT.loss_dic.*WEIGHT_DICT.loss_dice"):
        load_config(bad)


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigError, match="'MODEL.CRITERION.NAM'.*MODEL.CRITERION.NAME"):
        load_config(None, ["MODEL.CRITERION.NAM", "SetCriterion"])


def test_odd_override_list_and_type_mismatch():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="command line"):
        load_config(None, ["SOLVER.MAX_ITER", "'abc'"])


def test_missing_config_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    child = _write(tmp_path / "child.yaml", "_BASE_: missing_base.yaml\n")
    with pytest.raises(ConfigError, match="missing_base.yaml"):
        load_config(child)


def test_invalid_yaml_is_one_line(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "\n" not in str(e.value) and "bad.yaml" in str(e.value)


def test_dump_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = 77
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    again = load_config(str(path))
    assert again.SOLVER.MAX_ITER == 77
    assert again.dump() == cfg.dump()


def test_dict_literal_override_merges_into_a_group():
    """A loss's WEIGHT_DICT set on the command line the way a YAML file sets it."""
    cfg = load_config(None, ["MODEL.CRITERION.MULTISTEP.WEIGHT_DICT", "{'loss_mask': 5.0, 'loss_iou': 2.0}"])
    w = cfg.MODEL.CRITERION.MULTISTEP.WEIGHT_DICT
    assert (w.loss_mask, w.loss_iou, w.loss_dice, w.loss_class) == (5.0, 2.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="'MODEL.CRITERION.MULTISTEP.WEIGHT_DICT.loss_msk'.*loss_mask"):
        load_config(None, ["MODEL.CRITERION.MULTISTEP.WEIGHT_DICT", "{'loss_msk': 5.0}"])
    with pytest.raises(ConfigError, match="MODEL.CRITERION.MULTISTEP.WEIGHT_DICT is a group of keys.*loss_mask"):
        load_config(None, ["MODEL.CRITERION.MULTISTEP.WEIGHT_DICT", "5.0"])


def test_int_where_a_float_is_expected_is_accepted(tmp_path):
    """``2`` for a float key (YAML or command line) becomes 2.0; a string is still an error."""
    f = _write(
        tmp_path / "w.yaml",
        """\
        SOLVER:
          BASE_LR: 1
        MODEL:
          CRITERION:
            SET_CRITERION:
              WEIGHT_DICT:
                loss_mask: 7
        """,
    )
    cfg = load_config(
        f,
        [
            "MODEL.CRITERION.SET_CRITERION.EOS_COEF",
            "0",
            "MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT",
            "{'loss_dice': 3}",
        ],
    )
    sc = cfg.MODEL.CRITERION.SET_CRITERION
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert sc.WEIGHT_DICT.loss_mask == 7.0 and isinstance(sc.WEIGHT_DICT.loss_mask, float)
    assert sc.WEIGHT_DICT.loss_dice == 3.0 and isinstance(sc.WEIGHT_DICT.loss_dice, float)
    assert sc.EOS_COEF == 0.0 and isinstance(sc.EOS_COEF, float)
    # int keys stay int, and a bool is not taken for a number
    assert isinstance(load_config(None, ["SOLVER.MAX_ITER", "5"]).SOLVER.MAX_ITER, int)
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        load_config(None, ["SOLVER.BASE_LR", "True"])
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        load_config(None, ["SOLVER.BASE_LR", "'fast'"])


def test_single_value_for_a_tuple_and_flags_among_overrides(tmp_path):
    f = _write(tmp_path / "t.yaml", 'INPUT:\n  MIN_SIZE_TRAIN: 80\nDATASETS:\n  TRAIN: ("shapes_train",)\n')
    cfg = load_config(f)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (80,) and cfg.DATASETS.TRAIN == ("shapes_train",)
    cfg = load_config(None, ["INPUT.MIN_SIZE_TRAIN", "64", "DATASETS.TEST", "shapes_val", "SOLVER.STEPS", "100"])
    assert cfg.INPUT.MIN_SIZE_TRAIN == (64,) and cfg.DATASETS.TEST == ("shapes_val",) and cfg.SOLVER.STEPS == (100,)
    with pytest.raises(ConfigError, match="MIN_SIZE_TRAIN"):  # a string for a tuple of ints
        load_config(None, ["INPUT.MIN_SIZE_TRAIN", "'big'"])
    with pytest.raises(ConfigError, match="'--eval-only' is a flag.*overrides go last"):
        load_config(None, ["MODEL.WEIGHTS", "m.pth", "--eval-only", "SOLVER.MAX_ITER", "5"])


def test_families_register_their_config_nodes():
    cfg = get_cfg()
    for node in ("CRITERION", "MATCHER", "MASK_FORMER", "SEM_SEG_HEAD", "SAM2", "SAM3"):
        assert node in cfg.MODEL, node
    assert "VIDEO" in cfg.INPUT and "FIND" in cfg.INPUT
    assert cfg.MODEL.META_ARCHITECTURE == ""  # the core names no family; every config chooses one


def test_registered_config_addition_is_applied_by_get_cfg():
    def add_extra(cfg):
        cfg.EXTRA_NODE = CfgNode()
        cfg.EXTRA_NODE.VALUE = 3

    register_config_addition(add_extra)
    try:
        assert get_cfg().EXTRA_NODE.VALUE == 3
        register_config_addition(add_extra)  # registering twice applies it once
        assert CONFIG_ADDITIONS.count(add_extra) == 1
    finally:
        CONFIG_ADDITIONS.remove(add_extra)
    assert "EXTRA_NODE" not in get_cfg()


def test_unknown_key_without_the_model_package_says_what_to_import(monkeypatch):
    monkeypatch.setattr(
        "segtrain.config.cfg_node.CONFIG_ADDITIONS",
        [a for a in CONFIG_ADDITIONS if not a.__module__.startswith("segtrain.modeling")],
    )
    from segtrain.config.defaults import _C

    with pytest.raises(ConfigError, match="import segtrain.modeling"):
        _C.clone().merge_from_list(["MODEL.MASK_FORMER.DEC_LAYERS", "3"])
