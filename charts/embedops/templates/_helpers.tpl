{{/* Name of the release's objects: <release>-embedops, or the release name when it says embedops already. */}}
{{- define "embedops.fullname" -}}
{{- if contains "embedops" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-embedops" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "embedops.selectorLabels" -}}
app.kubernetes.io/name: embedops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embedops.labels" -}}
{{ include "embedops.selectorLabels" . }}
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

{{- define "embedops.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}
