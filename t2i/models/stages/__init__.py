"""Generator stage kinds, one module per family, registered by name when this package is imported.

Adding a kind: a module here with a ``@register_stage("name")`` :class:`GeneratorStage` subclass, and
one import line below. :mod:`t2i.models.generator` imports this package, so every kind is known wherever
a generator is built (training, ``pipeline.from_export``).
"""

from t2i.models.stages import attention, draw, init, stackgan  # noqa: F401  (register the kinds)
from t2i.models.stages.base import STAGE_KINDS, GeneratorStage, StageContext, StageOutput, StageSpec, register_stage

__all__ = ["STAGE_KINDS", "GeneratorStage", "StageContext", "StageOutput", "StageSpec", "register_stage"]
