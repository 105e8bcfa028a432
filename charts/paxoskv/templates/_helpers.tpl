{{/* The release's full name: the release name, with "-paxoskv" unless it holds it. */}}
{{- define "paxoskv.fullname" -}}
{{- if contains "paxoskv" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-paxoskv" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The recommended labels, on everything the chart installs. */}}
{{- define "paxoskv.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: paxoskv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paxoskv
{{- end -}}

{{- define "paxoskv.selectorLabels" -}}
app.kubernetes.io/name: paxoskv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "paxoskv.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "paxoskv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "paxoskv.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "paxoskv.clusterName" -}}
{{- default .Release.Name .Values.cluster.name -}}
{{- end -}}

{{/* The operator's rules: the same as deploy/paxoskv.yaml's (a test compares them). */}}
{{- define "paxoskv.rules" -}}
- apiGroups: [paxoskv.io]
  resources: [paxoskvclusters]
  verbs: [get, list, watch, patch]
- apiGroups: [paxoskv.io]
  resources: [paxoskvclusters/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services, secrets]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
