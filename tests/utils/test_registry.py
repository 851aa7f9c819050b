"""Registries: decorator registration, one-line unknown-name errors with close matches."""

import pytest

from segtrain.utils.errors import UnknownNameError
from segtrain.utils.registry import Registry


def test_register_and_get():
    reg = Registry("THING")

    @reg.register()
    class Foo:
        pass

    def bar():
        return 1

    reg.register(bar)
    assert reg.get("Foo") is Foo and reg.get("bar") is bar
    assert "Foo" in reg and reg.names() == ["Foo", "bar"]


def test_unknown_name_lists_names_and_closest():
    reg = Registry("CRITERION")
    for name in ["SetCriterion", "Sam3LossWrapper", "MultiStepMultiMasksAndIous"]:
        reg.register(type(name, (), {}))
    with pytest.raises(UnknownNameError) as e:
        reg.get("SetCriterio")
    msg = str(e.value)
    assert "\n" not in msg
    assert "CRITERION" in msg and "'SetCriterio'" in msg
    assert "Did you mean 'SetCriterion'" in msg
    assert "Sam3LossWrapper" in msg  # the full list of registered names
    assert isinstance(e.value, KeyError)


def test_double_registration_is_an_error():
    reg = Registry("THING")

    @reg.register()
    class Foo:
        pass

    with pytest.raises(ValueError, match="Foo.*THING"):
        reg.register(Foo)
