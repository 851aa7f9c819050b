"""comm works in a single process with no process group."""

import torch

from segtrain.utils import comm


def test_single_process_noops():
    assert comm.get_world_size() == 1 and comm.get_rank() == 0 and comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.gather(3) == [3]
    t = torch.tensor(5.0)
    assert comm.all_reduce_mean(t) is t
    d = {"x": torch.tensor(1.0)}
    assert comm.reduce_dict(d) is d
    assert isinstance(comm.shared_random_seed(), int)


def test_only_comm_and_launch_import_torch_distributed():
    """Losses, matchers and models reach other processes through comm only (so they run with
    no process group); the two files below are the only ones that touch torch.distributed."""
    import os
    import re

    import segtrain

    root = os.path.dirname(segtrain.__file__)
    pattern = re.compile(r"torch\.distributed|from torch import distributed|import torch\.distributed")
    users = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                if pattern.search(open(path).read()):
                    users.append(os.path.relpath(path, root))
    assert sorted(users) == [os.path.join("engine", "launch.py"), os.path.join("utils", "comm.py")]


def test_criteria_normalizers_average_through_comm():
    """The "global" normalizers of the three criterion families call comm.all_reduce_mean."""
    import inspect

    from segtrain.modeling.criterion import multistep_multimask, sam3_loss, set_criterion

    for mod in (set_criterion, sam3_loss, multistep_multimask):
        assert "comm.all_reduce_mean(" in inspect.getsource(mod), mod.__name__
