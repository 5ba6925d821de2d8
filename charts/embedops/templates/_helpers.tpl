{{/* The chart's name: nameOverride, or embedops. */}}
{{- define "embedops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the release's objects: fullnameOverride, else <release>-<name>, or the release name
when it contains the name already (release `embedops`: objects `embedops`). */}}
{{- define "embedops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "embedops.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Helm's conventions (`helm create`): the name label is the chart's name (nameOverride), the
instance the release; what the object is for goes in the component label. */}}
{{- define "embedops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embedops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embedops.labels" -}}
{{ include "embedops.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: embedops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "embedops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "embedops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: repository@digest when a digest pins it, else repository:tag (the tag
defaulting to the chart's appVersion). */}}
{{- define "embedops.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The monitoring.coreos.com kinds the cluster serves (or `helm template --api-versions` names),
or metrics.forceMonitoringObjects: render them whatever the API versions say (GitOps repos
rendered by `helm template` in CI, where no cluster answers). */}}
{{- define "embedops.hasServiceMonitor" -}}
{{- if or .Values.metrics.forceMonitoringObjects (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end -}}
{{- end -}}
{{- define "embedops.hasPrometheusRule" -}}
{{- if or .Values.metrics.forceMonitoringObjects (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") }}true{{ end -}}
{{- end -}}

{{/* What a ServiceMonitor or PrometheusRule left out says in `helm template`'s output, which
shows no NOTES: a comment where the object would be. */}}
{{- define "embedops.leftOut" -}}
# {{ .kind }} left out: metrics.{{ .value }}.enabled is true, but Helm was not told that the cluster
# serves monitoring.coreos.com/v1 {{ .kind }}. helm install and upgrade ask the cluster; with helm
# template, pass --api-versions monitoring.coreos.com/v1/{{ .kind }} or set
# metrics.forceMonitoringObjects=true.
{{- end -}}
