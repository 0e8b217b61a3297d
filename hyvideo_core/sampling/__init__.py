"""Flow-matching sampling for HunyuanVideo: schedule, solvers, guidance, caches and the one loop."""
from .cache import CacheReport, FirstBlockCache, TeaCache, installed
from ..text.templates import DEFAULT_NEGATIVE_PROMPT
from .guidance import GuidanceSettings
from .callbacks import SamplingHooks
from .context_windows import CONTEXT_SCHEDULES, FUSE_METHODS, ContextWindows
from .extras import SamplingExtras
from .latent_format import LATENT_SCALE, to_model_space, to_raw_latent
from .loop import SamplingOptions, SamplingResult, sample
from .noise import LatentPlan, plan_from_latent, plan_latent, seeded_noise
from .preview import latent_to_rgb
from .schedule import SigmaSchedule, flow_sigmas, plan_schedule
from .solvers import SOLVERS, make_solver
from .text_inputs import PromptPair, PromptTensors

__all__ = ["CONTEXT_SCHEDULES", "CacheReport", "ContextWindows", "FUSE_METHODS", "DEFAULT_NEGATIVE_PROMPT", "FirstBlockCache", "GuidanceSettings", "LATENT_SCALE",
           "LatentPlan", "PromptPair", "PromptTensors", "SOLVERS", "SamplingHooks", "SamplingExtras", "SamplingOptions",
           "SamplingResult", "SigmaSchedule", "TeaCache", "flow_sigmas", "installed",
           "latent_to_rgb", "make_solver", "plan_from_latent", "plan_latent", "plan_schedule", "sample", "seeded_noise",
           "to_model_space", "to_raw_latent"]
