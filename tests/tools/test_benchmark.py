"""tools/benchmark.py and its subcommand modules (tools/benchmarks/): every subcommand runs at
tiny settings, prints its table and writes JSON with the fields docs/benchmarks.md quotes; the
baselines (tests/reference) compute the same values and nothing in segtrain is patched."""

import importlib.util
import json
import os

import pytest
import torch

from tests.tools.sam3_tiny_sizes import TINY_SAM3
from tools.benchmarks import criterion as criterion_bench
from tools.benchmarks import masks as masks_bench
from tools.benchmarks import timing
from tools.benchmarks import train as train_bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(ROOT, "tools", "benchmark.py")
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")


def _load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tool():
    mod = _load_tool()
    yield mod
    torch.set_num_threads(1)  # the subcommands set their own thread count


@pytest.fixture
def shapes_tiny(tmp_datasets_root):
    """Built-in shapes data in tmp_path at 64 px; overrides for projects/m2f/tiny.yaml."""
    return [
        "DATASETS.SHAPES.IMAGE_SIZE",
        "64",
        "DATASETS.SHAPES.NUM_TRAIN",
        "4",
        "DATASETS.SHAPES.NUM_VAL",
        "3",
        "INPUT.MIN_SIZE_TRAIN",
        "(64,)",
        "INPUT.MAX_SIZE_TRAIN",
        "64",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
    ]


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_interleaved_rounds_rotate_and_collect_parts():
    calls = []
    cases = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), {"part": 0.5})[1]}
    res = timing.interleaved(cases, torch.device("cpu"), warmup=1, repeat=2)
    assert calls == ["a", "b", "a", "b", "b", "a"]  # warm-up, round 0 from a, round 1 from b
    assert len(res["a"]["times_ms"]) == 2 and res["b"]["part_median_ms"] == pytest.approx(500.0)


def test_criterion_groups_partition_the_cases():
    """Every criterion case is timed in exactly one interleaved group, and the compared pairs
    share a group."""
    flat = [c for g in criterion_bench.CRITERION_GROUPS for c in g]
    assert sorted(flat) == sorted(criterion_bench.CRITERION_CASES) and len(flat) == len(set(flat))
    groups = {c: g for g in criterion_bench.CRITERION_GROUPS for c in g}
    assert groups["m2f"] == groups["m2f_loop"] and groups["matcher"] == groups["matcher_loop"]


def test_criterion_tiny(tool, tmp_path, capsys):
    from scipy import optimize

    from segtrain.modeling.matcher import hungarian

    out = tmp_path / "crit.json"
    argv = [
        "criterion",
        "--queries",
        "6",
        "--classes",
        "4",
        "--layers",
        "3",
        "--image-size",
        "32",
        "--num-points",
        "40",
        "--gt-per-image",
        "2",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--cases",
        "m2f,m2f_loop,matcher,matcher_loop",
        "--no-memory",
        "--output",
        str(out),
    ]
    assert tool.main(argv) == 0
    rep = _json(out)
    assert "criterion benchmark" in capsys.readouterr().out
    assert {r["case"] for r in rep["results"]} == {"m2f", "m2f_loop", "matcher", "matcher_loop"}
    s = rep["summary"]
    assert s["criterion_speedup_loop_over_batched"] > 0 and s["matcher_speedup_loop_over_batched"] > 0
    # the batched criterion and the per-layer loop give the same losses under the same seed
    # 3 predictions x 3 losses, core_loss, core_loss_final, core_loss_aux, class_error
    assert s["criterion_equality"]["num_keys"] == 3 * 3 + 4 and s["criterion_equality"]["max_rel_diff"] < 1e-5
    # solved outside the matcher, on its own cost matrices: 3 outputs x 2 images with GT
    solver = s["matcher_solver"]
    assert solver["solver_calls"] == 3 * 2 and 0 < solver["solver_ms"] < solver["match_many_ms"]
    assert solver["solver_share"] == pytest.approx(solver["solver_ms"] / solver["match_many_ms"])
    assert hungarian.linear_sum_assignment is optimize.linear_sum_assignment
    assert rep["machine"]["cpu_count"] >= 1 and len(rep["machine"]["loadavg_1_5_15"]) == 3


def test_msda_tiny(tool, tmp_path):
    out = tmp_path / "msda.json"
    assert (
        tool.main(
            ["msda", "--sizes", "64x1", "--threads-list", "1,2", "--warmup", "0", "--repeat", "1", "--output", str(out)]
        )
        == 0
    )
    rep = _json(out)
    cases = {(r["threads"], r["case"]) for r in rep["results"]}
    assert cases == {(t, c) for t in (1, 2) for c in ("fast", "reference", "fast_coo")}
    assert rep["summary"]["64x1_1t_speedup_reference_over_fast"] > 0
    from segtrain.layers import ms_deform_attn

    assert ms_deform_attn.VALUE_GRAD_PATH == "auto"  # the module setting is never changed


def test_masks_tiny_memory_in_subprocess(tool, tmp_path):
    out = tmp_path / "masks.json"
    assert (
        tool.main(
            [
                "masks",
                "--image-size",
                "64",
                "--queries",
                "6",
                "--batch",
                "1",
                "--gt-per-image",
                "2",
                "--num-points",
                "32",
                "--warmup",
                "0",
                "--repeat",
                "1",
                "--cases",
                "points,full",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rep = _json(out)
    by = {r["case"]: r for r in rep["results"]}
    assert set(by) == {"points", "full"}
    for r in by.values():  # measured in a fresh process each
        assert "memory_error" not in r and r["peak_mb"] is not None and r["median_ms"] > 0
    assert rep["summary"]["matched_masks"] == 2


def test_masks_cases_same_gradient():
    """The chunked full-resolution case and its naive baseline send the same gradient."""
    import argparse

    args = argparse.Namespace(seed=0, batch=1, queries=5, image_size=32, gt_per_image=2, num_points=16)
    grads = []
    for name in ("full", "full_naive"):
        step, K, pred = masks_bench.masks_case(name, args, torch.device("cpu"))
        assert K == 2
        seen = []
        pred.register_hook(lambda g: seen.append(g.clone()))
        step()
        grads.append(seen[0])
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_train_data_eval_tiny(tool, tmp_path, shapes_tiny):
    out = tmp_path / "train.json"
    argv = [
        "train",
        "--config-file",
        TINY,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--batches",
        "1",
        "--no-memory",
        "--output",
        str(out),
    ] + shapes_tiny
    assert tool.main(argv) == 0
    rep = _json(out)
    by = {r["variant"]: r for r in rep["results"]}
    assert set(by) == {"segtrain", "baseline", "no_loss"}
    for r in by.values():
        assert r["fwd_bwd_median_ms"] > 0 and r["optim_median_ms"] > 0 and r["images_per_s"] > 0
    assert rep["summary"]["fwd_bwd_no_loss_median_s"] == by["no_loss"]["fwd_bwd_median_ms"] / 1000
    assert rep["summary"]["images_per_iteration"] == 2 and rep["summary"]["image_size"] == [64, 64]
    parts = rep["summary"]["breakdown_cpu_median_ms"]
    assert {"fwd_backbone", "fwd_pixel_decoder", "fwd_transformer_decoder", "fwd_criterion", "backward"} <= set(parts)

    out = tmp_path / "data.json"
    assert (
        tool.main(
            ["data", "--config-file", TINY, "--workers", "0", "--warmup", "1", "--repeat", "2", "--output", str(out)]
            + shapes_tiny
        )
        == 0
    )
    (r,) = _json(out)["results"]
    assert r["workers"] == 0 and r["images"] == 4 and r["images_per_s"] > 0

    out = tmp_path / "eval.json"
    assert (
        tool.main(
            [
                "eval",
                "--config-file",
                TINY,
                "--images",
                "3",
                "--dets",
                "5",
                "--warmup",
                "0",
                "--repeat",
                "1",
                "--output",
                str(out),
            ]
            + shapes_tiny
        )
        == 0
    )
    (r,) = _json(out)["results"]
    assert r["images"] == 3 and r["detections_per_image"] == 5 and r["total_ms_per_image"] > 0
    assert 0 <= r["segm_AP"] <= 100  # shifted GT masks are found


def test_no_loss_step_back_propagates_through_the_whole_model_without_the_criterion(shapes_tiny):
    """The no_loss variant: every parameter that the training loss reaches gets a gradient
    from the sum of the outputs, and the criterion is never called."""
    import argparse

    import torch

    args = argparse.Namespace(config_file=TINY, opts=shapes_tiny, module=[], seed=0, batches=1, device="cpu")
    batches, _ = train_bench.train_batches(args, torch.device("cpu"), 1)
    model, _, _ = train_bench.train_variant(args, torch.device("cpu"), "no_loss", batches)
    model.criterion.forward = lambda *a, **k: (_ for _ in ()).throw(AssertionError("criterion called"))
    train_bench.model_only_loss(model, batches[0]).backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and p.grad is None and not n.startswith("criterion.")
    ]
    assert no_grad == []


def test_baseline_variant_swaps_in_the_reference_forms(shapes_tiny):
    """The baseline model: every MSDeformAttn replaced by the reference module on the same
    parameters, the criterion by the reference loop with the same settings, the optimizer
    still holding every parameter of the model; segtrain's classes are left as they are."""
    import argparse

    from segtrain.layers.ms_deform_attn import MSDeformAttn
    from segtrain.modeling.criterion import SetCriterion
    from tests.reference import ReferenceMSDeformAttn, ReferenceSetCriterion

    args = argparse.Namespace(config_file=TINY, opts=shapes_tiny, module=[], seed=0, batches=1, device="cpu")
    cpu = torch.device("cpu")
    batches, _ = train_bench.train_batches(args, cpu, 1)
    model, opt, _ = train_bench.train_variant(args, cpu, "baseline", batches)
    kinds = [type(m) for m in model.modules()]
    assert ReferenceMSDeformAttn in kinds and MSDeformAttn not in kinds
    assert isinstance(model.criterion, ReferenceSetCriterion)
    segtrain_model, _, _ = train_bench.train_variant(args, cpu, "segtrain", batches)
    assert isinstance(segtrain_model.criterion, SetCriterion)
    assert model.criterion.weight_dict == segtrain_model.criterion.weight_dict
    assert model.criterion.num_points == segtrain_model.criterion.num_points
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} <= in_opt
    assert all(not g.get("foreach") and not g.get("fused") for g in opt.param_groups)
    torch.manual_seed(0)
    model(batches[0])["core_loss"].backward()


def test_unknown_case_is_an_error(tool, capsys):
    assert tool.main(["criterion", "--cases", "m2f,nope", "--no-memory"]) == 2
    assert "nope" in capsys.readouterr().err


def test_sam3_tiny_parts_and_memory_in_subprocess(tool, tmp_path):
    out = tmp_path / "sam3.json"
    argv = ["sam3", "--device", "cpu", "--threads", "1", "--warmup", "0", "--repeat", "2", "--input-size", "50x70"]
    assert tool.main(argv + ["--output", str(out)] + TINY_SAM3 + ["MODEL.SAM3.TEST.CONFIDENCE_THRESHOLD", "0.0"]) == 0
    rep = _json(out)
    (res,) = rep["results"]
    assert res["case"] == "image_and_text_prompt" and res["image_size"] == 112
    assert res["detections"] == 8  # threshold 0: every query kept and resized to the input
    assert "memory_error" not in res and res["peak_mb"] > 0  # measured in a fresh process
    assert res["first_image_peak_mb"] > 0
    parts = ("vit", "neck", "text", "grounding")
    assert all(res[f"{p}_median_ms"] > 0 and res[f"{p}_cpu_median_ms"] >= 0 for p in parts)
    for total, *times in zip(res["times_ms"], *(res[f"{p}_times_ms"] for p in parts)):
        assert sum(times) <= total + 0.01  # disjoint parts of each round's time
    assert rep["summary"]["parameters_millions"] > 1 and rep["summary"]["images_per_second"] > 0
    assert set(rep["summary"]["parts_median_ms"]) == set(parts)


def test_blas_variant_runs_without_the_onednn_products(shapes_tiny, monkeypatch):
    """The blas variant: the same model and loss, no product through oneDNN while its step
    runs, and the switch restored after it; the segtrain step does use them (where oneDNN is
    present)."""
    import argparse

    from segtrain.layers import wrappers

    calls = []
    real = wrappers._mm_nt
    monkeypatch.setattr(wrappers, "_mm_nt", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = argparse.Namespace(config_file=TINY, opts=shapes_tiny, module=[], seed=0, batches=1, device="cpu")
    cpu = torch.device("cpu")
    batches, _ = train_bench.train_batches(args, cpu, 1)
    for variant in ("blas", "segtrain"):
        model, opt, clip = train_bench.train_variant(args, cpu, variant, batches)
        calls.clear()
        out = train_bench.variant_step(model, opt, clip, batches, cpu, variant)()
        assert out["fwd_bwd"] > 0 and wrappers.ONEDNN_MATMUL
        assert (len(calls) > 0) == (variant == "segtrain" and wrappers._HAS_ONEDNN)
