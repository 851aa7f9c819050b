"""Start-up validation (segtrain.engine.startup_check) of the whole configuration: through
tools/train_net.py (one ``error:`` line per problem with the closest valid names, exit code 2,
no traceback unless --debug, nothing written or generated), and each check in-process."""

import os
import subprocess
import sys

import pytest

from segtrain.config import checks as config_checks
from segtrain.config import load_config
from segtrain.data import register_coco_instances, register_coco_panoptic
from segtrain.engine.startup_check import check_config, register_name_key, validate_config
from segtrain.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "train_net.py")
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
R50 = os.path.join(ROOT, "projects", "m2f", "r50.yaml")

BROKEN = [
    "MODEL.CRITERION.NAME",
    "SetCriterio",
    "DATASETS.TRAIN",
    "('shapes_trian',)",
    "INPUT.DATASET_MAPPER_NAME",
    "InstanceMapper",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "7",
]
EXPECTED = [
    "error: MODEL.CRITERION.NAME: no CRITERION named 'SetCriterio'. Did you mean 'SetCriterion'",
    "error: INPUT.DATASET_MAPPER_NAME: no MAPPER named 'InstanceMapper'. Did you mean 'InstanceDatasetMapper'",
    "error: DATASETS.TRAIN: dataset 'shapes_trian' is not registered. Did you mean 'shapes_train'",
    "error: MODEL.SEM_SEG_HEAD.NUM_CLASSES is 7 but dataset 'shapes_val' has 6 classes (circle, square,",
]


def _run(tmp_path, *args, flags=()):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", SEGTRAIN_DATASETS=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, SCRIPT, *flags, "--config-file", TINY, "OUTPUT_DIR", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_train_net_reports_every_problem_one_line_each(tmp_path):
    r = _run(tmp_path, *BROKEN)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == len(EXPECTED), r.stderr
    for line, start in zip(lines, EXPECTED):
        assert line.startswith(start), (line, start)
    assert "Traceback" not in r.stdout + r.stderr
    # stopped before any work: no output folder, no dataset generated
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_train_net_debug_shows_the_traceback(tmp_path):
    r = _run(tmp_path, "MODEL.CRITERION.NAME", "SetCriterio", flags=["--debug"])
    assert r.returncode != 0 and "Traceback" in r.stderr and "validate_config" in r.stderr
    assert "ConfigProblems: MODEL.CRITERION.NAME: no CRITERION named 'SetCriterio'" in r.stderr


@pytest.mark.parametrize("path", [TINY, R50])
def test_project_configs_pass(path):
    assert check_config(load_config(path)) == []


def _problems(*opts, **kw):
    return check_config(load_config(TINY, list(opts)), **kw)


def test_criterion_outputs_against_the_meta_arch():
    (p,) = _problems("MODEL.CRITERION.NAME", "MultiStepMultiMasksAndIous")
    assert p.startswith("MODEL.CRITERION.NAME: meta-architecture 'MaskFormer' does not produce the outputs")
    assert "multistep_pred_multimasks_high_res" in p and "it produces ['aux_outputs', " in p


def test_weight_key_of_a_loss_not_computed():
    (p,) = _problems("MODEL.CRITERION.SET_CRITERION.LOSSES", "['labels']")
    assert p.startswith("MODEL.CRITERION (SetCriterion): SetCriterion: weight_dict key 'loss_mask' is not a loss")
    assert "it computes ['loss_ce']" in p


def test_criterion_built_only_once_its_names_are_valid():
    (p,) = _problems(
        "MODEL.CRITERION.NAME",
        "Sam3LossWrapper",
        "MODEL.CRITERION.SAM3.LOSS_FNS",
        "['Boxes', 'Mask']",
        "MODEL.MATCHER.NAME",
        "BinaryHungarianMatcherV2",
    )
    assert p.startswith("MODEL.CRITERION.SAM3.LOSS_FNS: no SAM3_LOSS named 'Mask'. Did you mean 'Masks'?")


def test_solver_and_policy_names():
    problems = _problems(
        "SOLVER.OPTIMIZER", "adamw", "SOLVER.LR_SCHEDULER_NAME", "WarmupCosine", "DATASETS.ON_BAD_ANNOTATION", "skipp"
    )
    # in the order of the config
    assert [p.split(":")[0] for p in problems] == [
        "DATASETS.ON_BAD_ANNOTATION",
        "SOLVER.OPTIMIZER",
        "SOLVER.LR_SCHEDULER_NAME",
    ]
    assert "Did you mean 'AdamW'" in problems[1] and "'WarmupCosineLR'" in problems[2]
    assert "Did you mean 'skip'? Valid: error, skip" in problems[0]


def test_dataset_files_and_weights(tmp_path):
    register_coco_instances("startup_missing_files", {}, str(tmp_path / "gone.json"), str(tmp_path / "no_images"))
    problems = _problems("DATASETS.TRAIN", "('startup_missing_files',)", "MODEL.WEIGHTS", str(tmp_path / "w.pth"))
    assert problems == [
        "DATASETS.TRAIN: annotation file of dataset 'startup_missing_files' not found: "
        f"{str(tmp_path / 'gone.json')!r}",
        f"DATASETS.TRAIN: image folder of dataset 'startup_missing_files' not found: {str(tmp_path / 'no_images')!r}",
        f"MODEL.WEIGHTS: file not found: {str(tmp_path / 'w.pth')!r}",
    ]
    # a panoptic dataset's PNG folder is checked too
    pan_json = tmp_path / "pan.json"
    pan_json.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
    register_coco_panoptic("startup_missing_png", {}, str(tmp_path), str(tmp_path / "no_pngs"), str(pan_json))
    problems = _problems(
        "DATASETS.TRAIN", "('startup_missing_png',)", "DATASETS.TEST", "()", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1"
    )
    assert problems == [
        f"DATASETS.TRAIN: panoptic PNG folder of dataset 'startup_missing_png' not found: {str(tmp_path / 'no_pngs')!r}"
    ]
    # --resume with a checkpoint in OUTPUT_DIR does not read MODEL.WEIGHTS
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last_checkpoint").write_text("model_0000009.pth")
    assert _problems("MODEL.WEIGHTS", str(tmp_path / "w.pth"), "OUTPUT_DIR", str(tmp_path / "out"), resume=True) == []


def test_eval_only_checks_only_what_evaluation_uses():
    opts = ("DATASETS.TRAIN", "('nope',)", "MODEL.CRITERION.SET_CRITERION.LOSSES", "['labels']")
    assert len(_problems(*opts)) == 2
    assert _problems(*opts, train=False) == []
    (p,) = _problems("DATASETS.TEST", "('shapes_vall',)", train=False)
    assert p.startswith("DATASETS.TEST: dataset 'shapes_vall' is not registered. Did you mean 'shapes_val'")


def test_families_register_their_own_name_keys():
    register_name_key("SOLVER.AMP.DTYPE", "autocast dtype", lambda: ["auto", "float16", "bfloat16"])
    try:
        (p,) = _problems("SOLVER.AMP.DTYPE", "bfloat")
        assert p.startswith("SOLVER.AMP.DTYPE: no autocast dtype named 'bfloat'. Did you mean 'bfloat16'")
        with pytest.raises(ConfigError) as e:
            validate_config(load_config(TINY, ["SOLVER.AMP.DTYPE", "bfloat", "SOLVER.OPTIMIZER", "sgd"]))
        assert len(e.value.problems) == 2 and str(e.value).count("\n") == 1  # two problems: one line each
    finally:
        config_checks._NAME_KEYS.pop()


def test_empty_meta_architecture_names_the_choices():
    (p,) = _problems("MODEL.META_ARCHITECTURE", "")
    assert p.startswith("MODEL.META_ARCHITECTURE is empty: name the model to build, one of ") and "MaskFormer" in p
