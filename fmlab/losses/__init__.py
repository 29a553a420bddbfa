"""Every loss family, registered by name. Import a family module here to register it."""

from . import (
    consistency,  # noqa: F401  (registers ct, cd, ctm, facm)
    flow_matching,  # noqa: F401  (registers cfm, x1_prediction, reflow)
    flowmap_compositional,  # noqa: F401  (registers shortcut, psd, splitmeanflow, fmm, pfmm)
    flowmap_eulerian,  # noqa: F401  (registers emd, esd, ayf_emd)
    flowmap_lagrangian,  # noqa: F401  (registers lmd, lsd, ayf_lagrangian, tvm, pid)
    freeflow,  # noqa: F401  (registers freeflow)
    meanflow,  # noqa: F401  (registers meanflow, imf, soflow)
    sgflow,  # noqa: F401  (registers sgflow)
)
from .batch import Batch, draw_times, one_time_batch, two_time_batch
from .flow_matching import cfm_loss, per_sample_mse, reflow_pairs, x1_prediction_loss
from .registry import LossSpec, get_loss, list_losses, register
from .unrolled import anchored_consistency_loss, wtfm_loss  # noqa: F401  (registers wtfm, anchored_consistency)

__all__ = ["Batch", "draw_times", "one_time_batch", "two_time_batch", "LossSpec", "get_loss", "list_losses", "register",
           "cfm_loss", "x1_prediction_loss", "reflow_pairs", "per_sample_mse"]
