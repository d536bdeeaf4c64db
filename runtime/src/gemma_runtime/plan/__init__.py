"""``gemma-runtime plan``: the real serving and training steps compiled for TPU slices by XLA's TPU
compiler on a machine without a TPU (libtpu, the ``tpu-plan`` extra): bytes per chip, fit, the largest
batch that fits, FLOPs and a roofline time. ``plans.serving_plan`` and ``plans.training_plan`` are the
Python API; ``command`` is the command line (JAX-free until a plan starts)."""
