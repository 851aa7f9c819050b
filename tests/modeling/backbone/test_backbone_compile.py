"""MODEL.COMPILE compiles the backbone in place: same module, same parameter names."""

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.backbone import build_backbone


# importing torch._dynamo (done by nn.Module.compile) emits torch's own jit deprecation notices
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compile_switch_keeps_module_and_names():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    torch.manual_seed(0)
    plain = build_backbone(cfg)
    cfg.MODEL.COMPILE = True
    torch.manual_seed(0)
    compiled = build_backbone(cfg)
    assert type(compiled) is type(plain)  # not an OptimizedModule wrapper
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert getattr(compiled, "_compiled_call_impl", None) is not None  # compiled lazily, on first call
    assert getattr(plain, "_compiled_call_impl", None) is None
    assert get_cfg().MODEL.COMPILE is False
