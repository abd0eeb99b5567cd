{{/* Names and labels shared by every template. */}}

{{- define "ycloud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Trimmed to 40 so that "-controller" and pod suffixes stay under 63. */}}
{{- define "ycloud.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "ycloud.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ycloud.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ycloud.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ycloud.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "controller"). */}}
{{- define "ycloud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ycloud.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ycloud.componentLabels" -}}
{{ include "ycloud.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: call with (dict "root" $ "image" .Values.images.cni). */}}
{{- define "ycloud.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The NB remotes: the chart's own OVN central when it deploys one. */}}
{{- define "ycloud.nbAddress" -}}
{{- if .Values.ovn.deploy -}}
{{- $list := list -}}
{{- range .Values.ovn.central.nodeIPs -}}
{{- $list = append $list (printf "tcp:%s:6641" (include "ycloud.hostport" .)) -}}
{{- end -}}
{{- join "," $list -}}
{{- else -}}
{{- required "ovn.nbAddress is required (or set ovn.deploy: true)" .Values.ovn.nbAddress -}}
{{- end -}}
{{- end -}}

{{/* The SB remotes of the chart's own OVN central (ovn.deploy: true). */}}
{{- define "ycloud.sbAddress" -}}
{{- $list := list -}}
{{- range .Values.ovn.central.nodeIPs -}}
{{- $list = append $list (printf "tcp:%s:6642" (include "ycloud.hostport" .)) -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}

{{/* Whether the controller needs the TLS secret: any ssl: NB remote. */}}
{{- define "ycloud.nbTLS" -}}
{{- if contains "ssl:" (include "ycloud.nbAddress" .) -}}true{{- end -}}
{{- end -}}

{{/* An address as OVSDB remotes write it: IPv6 in brackets. */}}
{{- define "ycloud.hostport" -}}
{{- if contains ":" . -}}[{{ . }}]{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/*
KUBERNETES_SERVICE_HOST/PORT for clusters where the "kubernetes" Service is not reachable
from the host network before ycloud runs (no kube-proxy): kubeAPIServer.host overrides the
in-cluster address the Kubernetes clients use. Empty: the kubelet's defaults.
*/}}
{{- define "ycloud.apiServerEnv" -}}
{{- if .Values.kubeAPIServer.host -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.kubeAPIServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubeAPIServer.port | quote }}
{{- end -}}
{{- end -}}
