"""DAVIS / MOSE / YouTube-VOS label-PNG folders and SA-V masklet folders: reading, the objects
of each frame, clips drawn among annotated frames, masks through the mapper, bad files."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from segtrain.data import DatasetCatalog, MetadataCatalog, bad_annotation_policy
from segtrain.data.datasets import load_sav_folder, load_vos_folder, register_vos_folder
from segtrain.data.datasets.vos_folder import register_vos_builtin
from segtrain.data.video import ClipSampler, VideoDatasetMapper
from segtrain.data.video.video_objects import VOID_LABEL, video_objects
from segtrain.evaluation.video_evaluation import video_gt_masks
from segtrain.utils.errors import DatasetError

H, W = 12, 16
PALETTE = [0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * (256 * 3 - 12)
PALETTE[VOID_LABEL * 3 : VOID_LABEL * 3 + 3] = [255, 255, 255]


def _labels(t):
    """Frame t: object 1 moves right, object 2 leaves after frame 1, a void band on row 0."""
    lab = np.zeros((H, W), np.uint8)
    lab[2:6, t : t + 4] = 1
    if t < 2:
        lab[8:11, 10:14] = 2
    lab[0, :] = VOID_LABEL
    return lab


def _write_jpeg(path, h=H, w=W):
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _write_png(path, labels, palette=True):
    im = Image.fromarray(labels, mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette(PALETTE)
    im.save(path)


@pytest.fixture
def davis(tmp_path):
    """JPEGImages/<video>/NNNNN.jpg, Annotations/<video>/NNNNN.png: 'bear' (palette, 5 frames),
    'cat' (grey-level, frame 2 not annotated)."""
    images, masks = tmp_path / "JPEGImages", tmp_path / "Annotations"
    for video, palette, missing in (("bear", True, ()), ("cat", False, (2,))):
        (images / video).mkdir(parents=True)
        (masks / video).mkdir(parents=True)
        for t in range(5):
            _write_jpeg(images / video / f"{t:05d}.jpg")
            if t not in missing:
                _write_png(masks / video / f"{t:05d}.png", _labels(t), palette)
    return images, masks


def test_reads_palette_and_grey_folders_with_gaps(davis):
    images, masks = davis
    bear, cat = load_vos_folder(str(images), str(masks))
    assert bear["video_id"] == "bear" and (bear["height"], bear["width"], bear["length"]) == (H, W, 5)
    assert bear["file_names"][3].endswith("bear/00003.jpg") and bear["mask_file_names"][3].endswith("bear/00003.png")
    assert cat["mask_file_names"][2] is None and cat["mask_file_names"][3] is not None
    for video in (bear, cat):
        objects = video_objects(video)
        assert objects.objects_in(0) == [1, 2] and objects.objects_in(3) == [1]  # void is no object
        assert np.array_equal(objects.segmentation(3, 1), _labels(3) == 1)
        assert objects.segmentation(3, 2) is None
        assert objects.void(0)[0].all() and not objects.void(0)[1:].any()
        assert objects.all_objects() == [1, 2]
    assert video_objects(cat).annotated_frames() == [0, 1, 3, 4]
    ids, gt = video_gt_masks(bear)
    assert ids == [1, 2] and gt.shape == (5, 2, H, W) and np.array_equal(gt[4, 0], _labels(4) == 1)


def test_file_list_picks_videos(davis, tmp_path):
    images, masks = davis
    (tmp_path / "list.txt").write_text("cat\n")
    assert [d["video_id"] for d in load_vos_folder(str(images), str(masks), str(tmp_path / "list.txt"))] == ["cat"]


def test_clips_use_annotated_frames_and_label_masks(davis):
    images, masks = davis
    _, cat = load_vos_folder(str(images), str(masks))
    sampler = ClipSampler(4, 3)
    rng = np.random.RandomState(0)
    for _ in range(20):
        frames, objects = sampler.sample(cat, rng)
        assert frames == [0, 1, 3, 4] and objects == [1, 2]  # the 4 annotated frames; both visible at 0
    out = VideoDatasetMapper(is_train=True, clip_sampler=sampler)(cat)
    assert out["obj_ids"].tolist() == [1, 2] and out["frame_indices"].tolist() == [0, 1, 3, 4]
    expected = np.stack([np.stack([_labels(t) == k for k in (1, 2)]) for t in (0, 1, 3, 4)])
    assert np.array_equal(out["masks"].numpy(), expected)


def test_registration_and_bad_files(davis, tmp_path):
    images, masks = davis
    register_vos_folder("vos_test", {}, str(images), str(masks))
    assert len(DatasetCatalog.get("vos_test")) == 2
    assert MetadataCatalog.get("vos_test").evaluator_type == "video"

    bad = masks / "bear" / "00001.png"
    _write_png(bad, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match=rf"{bad}: mask is 16x13 \(WxH\) but the frames of 'bear' are 16x12"):
        load_vos_folder(str(images), str(masks))
    with bad_annotation_policy("skip"):
        assert [d["video_id"] for d in load_vos_folder(str(images), str(masks))] == ["cat"]
    _write_png(bad, _labels(1))

    (images / "dog").mkdir()
    _write_jpeg(images / "dog" / "00000.jpg")
    with pytest.raises(DatasetError, match=r"video 'dog' has no annotated frame"):
        load_vos_folder(str(images), str(masks))
    (masks / "dog").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(masks / "dog" / "00000.png")
    (dog,) = load_vos_folder(str(images), str(masks), _list(tmp_path, "dog"))
    with pytest.raises(DatasetError, match=r"dog/00000.png: a RGB PNG; object masks must be palette-indexed"):
        video_objects(dog).objects_in(0)


def test_builtin_davis_and_mose_register_when_present(davis, tmp_path):
    """$SEGTRAIN_DATASETS/DAVIS/{JPEGImages,Annotations}/480p with ImageSets/2017/{train,val}.txt
    registers davis2017_train / davis2017_val; nothing else is there, so no mose_train."""
    images, masks = davis
    root = tmp_path / "root"
    (root / "DAVIS" / "JPEGImages").mkdir(parents=True)
    (root / "DAVIS" / "Annotations").mkdir(parents=True)
    images.rename(root / "DAVIS" / "JPEGImages" / "480p")
    masks.rename(root / "DAVIS" / "Annotations" / "480p")
    (root / "DAVIS" / "ImageSets" / "2017").mkdir(parents=True)
    (root / "DAVIS" / "ImageSets" / "2017" / "train.txt").write_text("bear\n")
    (root / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text("cat\n")
    names = register_vos_builtin(str(root))
    assert names == ["davis2017_train", "davis2017_val"]
    assert [d["video_id"] for d in DatasetCatalog.get("davis2017_val")] == ["cat"]


def _list(tmp_path, *names):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(names))
    return str(path)


# ---------------------------------------------------------------------------- SA-V
def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def test_sav_masklets_every_fourth_frame(tmp_path):
    """12 JPEG frames at 24 fps, annotations every 4th: masklet entries 0, 1, 2 are frames 0, 4
    and 8; entry 1 lacks object 1 (null), so frame 4 is dropped as the official loader does."""
    images, annotations = tmp_path / "JPEGImages_24fps", tmp_path / "annotations"
    (images / "sav_000001").mkdir(parents=True)
    annotations.mkdir()
    for t in range(12):
        _write_jpeg(images / "sav_000001" / f"{t:05d}.jpg")
    m0, m1 = _labels(0) == 1, _labels(0) == 2
    masklet = [[_rle(m0), _rle(m1)], [_rle(m0), None], [_rle(m0), _rle(np.zeros((H, W), bool))]]
    (annotations / "sav_000001_manual.json").write_text(json.dumps({"masklet": masklet, "video_id": "sav_000001"}))
    (video,) = load_sav_folder(str(images), str(annotations), ann_every=4)
    assert [f.rsplit("/", 1)[1] for f in video["file_names"]] == ["00000.jpg", "00008.jpg"]
    assert video["masklet_frames"] == [0, 2]
    objects = video_objects(video)
    assert objects.objects_in(0) == [0, 1] and objects.objects_in(1) == [0]  # an empty RLE is absent
    assert np.array_equal(mask_util.decode(objects.segmentation(1, 0)).astype(bool), m0)
    out = VideoDatasetMapper(is_train=False)(video)
    assert out["obj_ids"].tolist() == [0, 1] and np.array_equal(out["masks"][0, 1].numpy(), m1)

    (annotations / "sav_000001_manual.json").unlink()
    with pytest.raises(DatasetError, match=r"sav_000001_manual.json: annotation JSON of video 'sav_000001' not found"):
        load_sav_folder(str(images), str(annotations))
