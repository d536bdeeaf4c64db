"""kopf glue: importing this package registers every handler. Handlers parse, call the pure
render/reconcile functions, act through gemma_operator.k8s, and patch status."""

from gemma_operator.handlers import serving, startup, training

__all__ = ["serving", "startup", "training"]
