{{/* The operator's rules on namespaced resources: the same list in the ClusterRole (watching every
namespace) and in each Role (watching .Values.operator.watchNamespaces). Derived from what the handlers
call (gemma_operator/handlers, gemma_operator/k8s): a server-side apply needs create (the first time)
and patch; nothing here touches Secrets. */}}
{{- define "gemma-operator.namespacedRules" -}}
# GemmaServer / GemmaTraining: kopf lists and watches them, the handlers re-read one before a refresh,
# and kopf keeps its bookkeeping in annotations (patch).
- apiGroups: ["gemma.ai"]
  resources: ["gemmaservers", "gemmatrainings"]
  verbs: ["get", "list", "watch", "patch"]
# Status has one writer, the operator: a merge patch of the status subresource.
- apiGroups: ["gemma.ai"]
  resources: ["gemmaservers/status", "gemmatrainings/status"]
  verbs: ["get", "patch"]
# Children carry ownerReferences with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
# admission plugin (when enabled) allows only to who may update the owner's finalizers.
- apiGroups: ["gemma.ai"]
  resources: ["gemmaservers/finalizers", "gemmatrainings/finalizers"]
  verbs: ["update"]
# The runtime config (ConfigMap) and the serving / headless Services: server-side applied.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "patch"]
# Serving Deployments: applied, read for status, watched for events (a deleted one is re-created).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Training Jobs: applied, read and watched for status, suspend patched, earlier attempts deleted.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.rbac.jobSets }}
# Multislice trainings run as JobSets: applied, read for status, earlier attempts deleted.
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
# The serving PodDisruptionBudget: server-side applied.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
# The serving HorizontalPodAutoscaler: applied, and listed and deleted when spec.autoscaling goes away.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "create", "patch", "delete"]
# The InferencePool of a server with spec.inferencePool (GKE Inference Gateway): applied while its CRD is
# served, read back for the status, listed and deleted when the field goes away. Granted always: the field
# is per server, and a rule on a kind the cluster does not serve grants nothing.
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- if has "PodMonitoring" .Values.operator.scrapeMonitors }}
# The servers' Google Managed Prometheus scrape configs: applied, listed and deleted when unset.
- apiGroups: ["monitoring.googleapis.com"]
  resources: ["podmonitorings"]
  verbs: ["list", "create", "patch", "delete"]
{{- end }}
{{- if has "ServiceMonitor" .Values.operator.scrapeMonitors }}
# The servers' Prometheus Operator scrape configs: applied, listed and deleted when unset.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "create", "patch", "delete"]
{{- end }}
# Pods are only read: status (scheduling, crash loops, exit codes) and the pod IPs of /stats and /progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events about our resources, through events.k8s.io/v1 (gemma_operator.k8s.events).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# kopf posts core v1 Events when a handler fails; a training's pods that cannot be created are told
# only by the Job controller's FailedCreate Events, which status reads.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end }}

{{/* Cluster-scoped reads kopf needs in every mode. */}}
{{- define "gemma-operator.clusterRules" -}}
# kopf lists the CRDs at start and watches them, so a CRD installed later (e.g. JobSet) is noticed.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
