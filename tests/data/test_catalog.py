"""DatasetCatalog / MetadataCatalog: lazy recipes, one-line errors with suggestions."""

import pytest

from segtrain.data import DATASET_REGISTRY, DatasetCatalog, MetadataCatalog
from segtrain.utils.errors import DatasetError, SegtrainError, UnknownNameError


def test_register_get_remove():
    calls = []

    def load():
        calls.append(1)
        return [{"file_name": "x.jpg"}]

    DatasetCatalog.register("test_cat_ds", load)
    try:
        assert calls == []  # nothing is loaded at registration
        assert "test_cat_ds" in DatasetCatalog.list() and DATASET_REGISTRY is DatasetCatalog
        assert DatasetCatalog.get("test_cat_ds") == [{"file_name": "x.jpg"}] and calls == [1]
        with pytest.raises(DatasetError, match="already registered"):
            DatasetCatalog.register("test_cat_ds", load)
    finally:
        DatasetCatalog.remove("test_cat_ds")
    assert "test_cat_ds" not in DatasetCatalog


def test_decorator_and_non_list():
    @DatasetCatalog.register("test_cat_bad")
    def load():
        return {"not": "a list"}

    try:
        with pytest.raises(DatasetError, match="expected a list"):
            DatasetCatalog.get("test_cat_bad")
    finally:
        DatasetCatalog.remove("test_cat_bad")


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError) as e:
        DatasetCatalog.get("shapes_trian")
    msg = str(e.value)
    assert "'shapes_train'" in msg and "Registered:" in msg and "\n" not in msg


def test_metadata():
    meta = MetadataCatalog.get("test_cat_meta")
    try:
        meta.set(thing_classes=["a", "b"], evaluator_type="coco")
        assert MetadataCatalog.get("test_cat_meta").thing_classes == ["a", "b"]
        meta.thing_classes = ["a", "b"]  # same value is fine
        with pytest.raises(DatasetError, match="thing_classes"):
            meta.thing_classes = ["c"]
        with pytest.raises(AttributeError) as e:
            meta.stuff_classes
        assert isinstance(e.value, SegtrainError)
        assert "test_cat_meta" in str(e.value) and "thing_classes" in str(e.value)
        assert getattr(meta, "stuff_classes", None) is None and meta.get("x", 3) == 3
    finally:
        MetadataCatalog.remove("test_cat_meta")
