"""segtrain.utils.allocator.tune_malloc: applied once on glibc, a no-op when switched off or
when the user set glibc's own variables, a clear error for a bad switch value, and harmless:
the same computation gives the same values with and without it (each case in a fresh
interpreter, since malloc settings are process-wide)."""

import json
import os
import platform
import subprocess
import sys

import pytest

from segtrain.utils.allocator import MALLOC_ENV, tune_malloc
from segtrain.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = r"""
import json, sys, torch
from segtrain.utils.allocator import tune_malloc
applied = tune_malloc()
g = torch.Generator().manual_seed(0)
vals = []
for _ in range(3):  # large tensors allocated and freed, as in a training step
    x = torch.randn(4, 1 << 20, generator=g)  # 16 MiB
    y = (x.sigmoid() * x).sum(1)
    vals.append(y.tolist())
    del x, y
print(json.dumps({"applied": applied, "vals": vals}))
"""


def _run(env_extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("MALLOC_") and k.endswith("_")) and k != "GLIBC_TUNABLES"
    }
    env.update(env_extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_default_and_user_settings_give_the_same_values():
    tuned = _run({MALLOC_ENV: "tuned"})
    default = _run({MALLOC_ENV: "default"})
    user = _run({MALLOC_ENV: "tuned", "MALLOC_ARENA_MAX_": "2"})
    assert tuned["vals"] == default["vals"] == user["vals"]
    assert default["applied"] is None and user["applied"] is None
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert tuned["applied"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}
    else:
        assert tuned["applied"] is None


def test_bad_switch_value_is_a_config_error(monkeypatch):
    monkeypatch.setenv(MALLOC_ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"SEGTRAIN_MALLOC='jemalloc'.*valid: tuned, default"):
        tune_malloc()
    assert tune_malloc("default") is None  # an explicit mode wins over the environment
