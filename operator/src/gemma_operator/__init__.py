"""The Gemma operator: reconciles GemmaServer and GemmaTraining resources on Kubernetes."""

__version__ = "0.1.0"

__all__ = ["__version__"]
