"""Several processes for one video: sequence parallelism (Ulysses, ring, both) and CFG parallel
for the DiT, as a policy installed on the model from outside (torch.distributed: NCCL on CUDA,
gloo on CPU). See policy.py for the use."""
from .cfg import CFGSplit
from .comm import Traffic
from .config import ParallelConfig, ParallelGroups, allowed_layouts, build_groups
from .identity import check_same, check_same_model, weights_fingerprint
from .policy import ParallelPolicy

__all__ = ["CFGSplit", "ParallelConfig", "ParallelGroups", "ParallelPolicy", "Traffic", "allowed_layouts",
           "build_groups", "check_same", "check_same_model", "weights_fingerprint"]
