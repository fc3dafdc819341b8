{{/*
Labels. Every object carries canaryd's own labels (the same as the kustomize
install) and Helm's. Call with (dict "ctx" $ "component" "controller"); an empty
component leaves app.kubernetes.io/component out, as on the CRDs.
*/}}
{{- define "canaryd.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "canaryd.labels" -}}
app.kubernetes.io/name: canaryd
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: canaryd
{{ include "canaryd.helmLabels" .ctx }}
{{- end -}}

{{/* The controller pods' labels, which the Deployment, Service, PDB and NetworkPolicy select. */}}
{{- define "canaryd.selectorLabels" -}}
app.kubernetes.io/name: canaryd
app.kubernetes.io/component: controller
{{- end -}}

{{- define "canaryd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/*
An object read from files/ (kept identical to the kustomize manifests by
packaging/render_release.py), with Helm's labels and part-of added and extra labels merged.
Call with (dict "ctx" $ "path" "files/..." "labels" (dict ...) "namespace" "...").
*/}}
{{- define "canaryd.fileObject" -}}
{{- $obj := .ctx.Files.Get .path | fromYaml -}}
{{- $labels := merge (dict) (default (dict) .labels) (include "canaryd.helmLabels" .ctx | fromYaml) (dict "app.kubernetes.io/part-of" "canaryd") (default (dict) $obj.metadata.labels) -}}
{{- $_ := set $obj.metadata "labels" $labels -}}
{{- with .namespace }}{{ $_ := set $obj.metadata "namespace" . }}{{ end -}}
{{- with .annotations }}{{ $_ := set $obj.metadata "annotations" (merge (dict) . (default (dict) $obj.metadata.annotations)) }}{{ end -}}
{{ toYaml $obj }}
{{- end -}}
