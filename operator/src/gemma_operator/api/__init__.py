"""The gemma.ai/v1alpha1 API: pydantic models (the source of truth), the accelerator table, and the
generator that turns the models into CRDs."""

from gemma_operator.api.v1alpha1 import API_VERSION, GROUP, KINDS, VERSION, GemmaServer, GemmaTraining

__all__ = ["API_VERSION", "GROUP", "KINDS", "VERSION", "GemmaServer", "GemmaTraining"]
