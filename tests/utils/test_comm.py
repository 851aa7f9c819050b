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
