{{/* Chart name and release-scoped full names. */}}
{{- define "airloop.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airloop.labels" -}}
app.kubernetes.io/part-of: airloop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for one component: include "airloop.selector" (list . "mlflow") */}}
{{- define "airloop.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{- define "airloop.image" -}}
{{- if .digest -}}{{ printf "%s@%s" .repository .digest }}{{- else -}}{{ printf "%s:%s" .repository .tag }}{{- end -}}
{{- end -}}

{{/* Restricted Pod Security Standard: pod level. */}}
{{- define "airloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . | default 10001 }}
runAsGroup: {{ . | default 10001 }}
fsGroup: {{ . | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security Standard: container level. */}}
{{- define "airloop.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "airloop.mlflow.host" -}}{{ printf "%s-mlflow.%s.svc" (include "airloop.fullname" .) .Release.Namespace }}{{- end -}}
{{- define "airloop.mlflow.url" -}}{{ printf "http://%s:%v" (include "airloop.mlflow.host" .) .Values.mlflow.service.port }}{{- end -}}
{{- define "airloop.feast.url" -}}{{ printf "http://%s-feast.%s.svc:%v" (include "airloop.fullname" .) .Release.Namespace .Values.feast.featureServer.port }}{{- end -}}
{{- define "airloop.redis.url" -}}
{{- if .Values.feast.redis.enabled -}}{{ printf "%s-redis.%s.svc:6379" (include "airloop.fullname" .) .Release.Namespace }}{{- else -}}{{ .Values.feast.redis.externalUrl }}{{- end -}}
{{- end -}}
{{/* The same Redis as the URL the runtime reads (AIRLOOP_FEAST_ONLINE: redis://host:port/db). */}}
{{- define "airloop.redis.runtimeUrl" -}}{{ printf "redis://%s/0" (include "airloop.redis.url" .) }}{{- end -}}
{{- define "airloop.ray.address" -}}{{ printf "ray://%s-ray-head-svc.%s.svc:10001" (include "airloop.fullname" .) .Release.Namespace }}{{- end -}}
{{- define "airloop.mlflow.secretName" -}}{{ .Values.mlflow.existingSecret | default (printf "%s-mlflow" (include "airloop.fullname" .)) }}{{- end -}}
{{- define "airloop.ray.secretName" -}}{{ .Values.ray.auth.secretName | default (printf "%s-ray-auth" (include "airloop.fullname" .)) }}{{- end -}}

{{/* A Kubernetes quantity ("500m", "2", "1.5Gi", "1G") in thousandths of its base unit
(millicores, millibytes), rounded to a whole number so that sums compare exactly, for
check-values' arithmetic: include "airloop.milliQuantity" "1.5" -> 1500. */}}
{{- define "airloop.milliQuantity" -}}
{{- $s := toString . -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $s -}}
{{- $suffix := trimPrefix $num $s -}}
{{- $mult := dict "m" 1.0 "" 1e3 "k" 1e6 "M" 1e9 "G" 1e12 "T" 1e15 "P" 1e18 "E" 1e21 "Ki" 1024e3 "Mi" 1048576e3 "Gi" 1073741824e3 "Ti" 1099511627776e3 "Pi" 1125899906842624e3 "Ei" 1152921504606846976e3 -}}
{{- if or (not $num) (not (hasKey $mult $suffix)) -}}
{{- fail (printf "%q is not a Kubernetes quantity this chart can compare (digits, optional fraction, then one of m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei)" $s) -}}
{{- end -}}
{{- round (mulf (float64 $num) (index $mult $suffix)) 0 -}}
{{- end -}}

{{/* Seldon Core 2 objects (Server, HPA, PodMonitor, SeldonRuntime, NetworkPolicies) are
rendered in every tenant namespace when this is "true". */}}
{{- define "airloop.seldon.enabled" -}}
{{- if and .Values.serving.enabled (eq .Values.serving.target "seldon") -}}true{{- end -}}
{{- end -}}
