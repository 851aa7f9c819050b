"""DatasetCatalog / MetadataCatalog: lazy recipes, one-line errors with suggestions, and the
snapshot / restore that undoes registrations."""

import pytest

from segtrain.data import DATASET_REGISTRY, DatasetCatalog, MetadataCatalog
from segtrain.data.catalog import catalogs_restored
from segtrain.utils.errors import DatasetError, SegtrainError, UnknownNameError


def test_register_get_remove():
    calls = []

    def load():
        calls.append(1)
        return [{"file_name": "x.jpg"}]

    DatasetCatalog.register("test_cat_ds", load)
    assert calls == []  # nothing is loaded at registration
    assert "test_cat_ds" in DatasetCatalog.list() and DATASET_REGISTRY is DatasetCatalog
    assert DatasetCatalog.get("test_cat_ds") == [{"file_name": "x.jpg"}] and calls == [1]
    with pytest.raises(DatasetError, match="already registered"):
        DatasetCatalog.register("test_cat_ds", load)
    DatasetCatalog.remove("test_cat_ds")
    assert "test_cat_ds" not in DatasetCatalog


def test_decorator_and_non_list():
    @DatasetCatalog.register("test_cat_bad")
    def load():
        return {"not": "a list"}

    with pytest.raises(DatasetError, match="expected a list"):
        DatasetCatalog.get("test_cat_bad")


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError) as e:
        DatasetCatalog.get("shapes_trian")
    msg = str(e.value)
    assert "'shapes_train'" in msg and "Registered:" in msg and "\n" not in msg


def test_metadata():
    meta = MetadataCatalog.get("test_cat_meta")
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


def test_restore_undoes_additions_replacements_removals_and_attributes():
    def keep():
        return [{"file_name": "keep.jpg"}]

    def gone():
        return [{"file_name": "gone.jpg"}]

    DatasetCatalog.register("test_cat_keep", keep)
    DatasetCatalog.register("test_cat_gone", gone)
    keep_meta = MetadataCatalog.get("test_cat_keep").set(thing_classes=["a"])
    gone_meta = MetadataCatalog.get("test_cat_gone").set(evaluator_type="coco")
    names_before = DatasetCatalog.list()
    datasets, metadata = DatasetCatalog.snapshot(), MetadataCatalog.snapshot()

    DatasetCatalog.register("test_cat_new", keep)
    MetadataCatalog.get("test_cat_new").set(thing_classes=["n"])
    DatasetCatalog.remove("test_cat_keep")
    DatasetCatalog.register("test_cat_keep", gone)  # replaced
    MetadataCatalog.remove("test_cat_keep")
    MetadataCatalog.get("test_cat_keep").set(thing_classes=["other"])
    DatasetCatalog.remove("test_cat_gone")
    MetadataCatalog.remove("test_cat_gone")
    gone_meta.set(json_file="x.json")  # an attribute set on the removed object
    DatasetCatalog.restore(datasets)
    MetadataCatalog.restore(metadata)

    assert DatasetCatalog.list() == names_before and "test_cat_new" not in MetadataCatalog
    assert DatasetCatalog.get("test_cat_keep") == [{"file_name": "keep.jpg"}]
    assert DatasetCatalog.get("test_cat_gone") == [{"file_name": "gone.jpg"}]
    assert MetadataCatalog.get("test_cat_keep") is keep_meta and keep_meta.thing_classes == ["a"]
    assert MetadataCatalog.get("test_cat_gone") is gone_meta and gone_meta.get("json_file") is None
    assert gone_meta.evaluator_type == "coco" and gone_meta.name == "test_cat_gone"


def test_catalogs_restored_also_on_error():
    shapes_loader = DatasetCatalog.snapshot()["shapes_train"]
    shapes_meta = MetadataCatalog.get("shapes_train")
    with pytest.raises(RuntimeError, match="inside"):
        with catalogs_restored():
            DatasetCatalog.register("test_cat_inside", lambda: [])
            DatasetCatalog.remove("shapes_train")
            MetadataCatalog.remove("shapes_train")
            MetadataCatalog.get("shapes_train").set(num_images=1)
            raise RuntimeError("inside")
    assert "test_cat_inside" not in DatasetCatalog and "test_cat_inside" not in MetadataCatalog
    assert DatasetCatalog.snapshot()["shapes_train"] is shapes_loader
    assert MetadataCatalog.get("shapes_train") is shapes_meta and shapes_meta.num_images != 1
