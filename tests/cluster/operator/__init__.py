"""The operator's code against the real control plane: the `gemma_operator.k8s` door to the cluster."""
