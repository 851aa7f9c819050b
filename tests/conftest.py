"""Suite-wide settings: one intra-op thread (CI has 2 cores; oversubscription makes tiny ops 10-40x slower)."""
import torch

torch.set_num_threads(1)
