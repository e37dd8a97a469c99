{{/* Names and labels. */}}
{{- define "pas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pas.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "scaler"). */}}
{{- define "pas.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pas.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "pas.agentImage" -}}
{{ .Values.agentImage.repository }}:{{ .Values.agentImage.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod security: non-root, RuntimeDefault seccomp. */}}
{{- define "pas.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 65532 }}
runAsGroup: {{ .uid | default 65532 }}
fsGroup: {{ .uid | default 65532 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security: read-only root, no escalation, no capabilities. */}}
{{- define "pas.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The Secret with the NATS users' passwords. */}}
{{- define "pas.natsSecret" -}}
{{- .Values.nats.existingSecret | default (printf "%s-nats-users" (include "pas.fullname" .)) -}}
{{- end -}}

{{- define "pas.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ include "pas.fullname" . }}-nats:4222
{{- else -}}
{{- required "nats.external.url is required when nats.enabled is false" .Values.nats.external.url -}}
{{- end -}}
{{- end -}}

{{/* NATS connection of a stage as `user`: (dict "ctx" $ "user" "scaler"). */}}
{{- define "pas.natsEnv" -}}
- name: PAS_NATS__URLS
  value: {{ include "pas.natsUrl" .ctx | quote }}
- name: PAS_NATS__USER
  value: {{ .user }}
- name: PAS_NATS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pas.natsSecret" .ctx }}
      key: {{ .user }}
- name: PAS_LOG_JSON
  value: {{ .ctx.Values.logJson | quote }}
{{- end -}}

{{/* A stage's probes, on its health port. */}}
{{- define "pas.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http-metrics}
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: http-metrics}
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "pas.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* InfluxDB: URL and the Secret and key of its token. */}}
{{- define "pas.influxUrl" -}}
{{- if .Values.recorder.influx.url -}}
{{ .Values.recorder.influx.url }}
{{- else if .Values.influxdb.enabled -}}
http://{{ include "pas.fullname" . }}-influxdb:8086
{{- else -}}
{{- fail "the recorder needs recorder.influx.url or influxdb.enabled=true (or recorder.enabled=false)" -}}
{{- end -}}
{{- end -}}

{{- define "pas.influxSecret" -}}
{{- .Values.influxdb.existingSecret | default (printf "%s-influxdb" (include "pas.fullname" .)) -}}
{{- end -}}

{{/*
Where a component's pods run, from its values: nodeSelector, tolerations,
affinity, topologySpreadConstraints, priorityClassName. Without an affinity
of its own, a component that runs several pods ("spread" true) prefers
nodes its siblings are not on, so losing a node loses one of them.
(dict "ctx" $ "values" .Values.forecaster "component" "forecaster" "spread" true)
*/}}
{{- define "pas.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity: {{- toYaml .values.affinity | nindent 2 }}
{{- else if .spread }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "pas.selector" (dict "ctx" .ctx "component" .component) | nindent 14 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* A component's own pod annotations (its values' podAnnotations). */}}
{{- define "pas.podAnnotations" -}}
{{- with .podAnnotations }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget: at most one pod of the component down at a time
(dict "ctx" $ "component" "scaler"). */}}
{{- define "pas.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "pas.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "pas.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "pas.selector" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end -}}

{{/* The NATS servers' configuration files (the ConfigMap's data). */}}
{{- define "pas.natsConfig" -}}
{{- $fullname := include "pas.fullname" . -}}
nats.conf: |
  # NATS with JetStream for PAS; the users come from accounts.conf
  # (files/nats-accounts.conf, the same file nats/server.conf includes).
  server_name: $POD_NAME
  listen: 0.0.0.0:4222
  http: 0.0.0.0:8222
  pid_file: /var/run/nats/nats.pid
  # On SIGTERM (the pre-stop hook sends lame-duck), stop taking clients and
  # move them over this long, after a grace period.
  lame_duck_duration: 30s
  lame_duck_grace_period: 10s
  jetstream {
    store_dir: /data/jetstream
    max_memory_store: {{ .Values.nats.jetstream.maxMemory }}
    max_file_store: {{ .Values.nats.jetstream.maxFile }}
  }
  {{- if gt (int .Values.nats.replicas) 1 }}
  cluster {
    name: {{ $fullname }}-nats
    listen: 0.0.0.0:6222
    routes: [
      {{- range $i := until (int .Values.nats.replicas) }}
      nats://{{ $fullname }}-nats-{{ $i }}.{{ $fullname }}-nats-headless:6222
      {{- end }}
    ]
  }
  {{- end }}
  include "accounts.conf"
accounts.conf: |
  {{- .Files.Get "files/nats-accounts.conf" | nindent 2 }}
{{- end -}}

{{/* Replicas of every stream and bucket: busInit.replicas, else the
release's NATS servers (at most 5); empty with an external NATS. */}}
{{- define "pas.busReplicas" -}}
{{- .Values.busInit.replicas | default (ternary (min .Values.nats.replicas 5) 0 .Values.nats.enabled) -}}
{{- end -}}

{{/* `pas bus init` / `bus status` arguments sizing the streams for the fleet (busInit.fleet), each with a leading comma. */}}
{{- define "pas.busFleetArgs" -}}
{{- $sample := .Values.agent.interval | default "5s" -}}
{{- $forecast := (.Values.forecaster.env | default dict).PAS_STEP | default "15s" -}}
{{- with .Values.busInit.fleet -}}
{{- if .workloads -}}
, "--workloads", "{{ int64 .workloads }}", "--pods-per-workload", "{{ int64 .podsPerWorkload }}", "--retention", "{{ .retention }}", "--name-length", "{{ int64 .nameLength }}", "--sample-interval", "{{ $sample }}", "--forecast-interval", "{{ $forecast }}"
{{- end -}}
{{- end -}}
{{- end -}}
