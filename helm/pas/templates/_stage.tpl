{{/*
One PAS stage as a Deployment running `pas <name>`, and, with
metrics.serviceMonitor.enabled, its Service and ServiceMonitor.
(dict "ctx" $ "name" "scaler" "port" 9467 "replicas" 2 "env" (list ...) "serviceAccount" "...")
*/}}
{{- define "pas.stage" -}}
{{- $ctx := .ctx -}}
{{- $fullname := include "pas.fullname" $ctx -}}
{{- $values := index $ctx.Values .name -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "pas.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  replicas: {{ .replicas | default 1 }}
  selector:
    matchLabels:
      {{- include "pas.selector" (dict "ctx" $ctx "component" .name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pas.selector" (dict "ctx" $ctx "component" .name) | nindent 8 }}
      annotations:
        {{- include "pas.scrapeAnnotations" (dict "ctx" $ctx "port" .port) | nindent 8 }}
        {{- include "pas.podAnnotations" $values | nindent 8 }}
    spec:
      {{- include "pas.scheduling" (dict "ctx" $ctx "values" $values "component" .name "spread" (gt (int (.replicas | default 1)) 1)) | nindent 6 }}
      {{- if .serviceAccount }}
      serviceAccountName: {{ .serviceAccount }}
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      enableServiceLinks: false
      securityContext:
        {{- include "pas.podSecurity" dict | nindent 8 }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "pas.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args: [{{ .name | quote }}]
          env:
            {{- include "pas.natsEnv" (dict "ctx" $ctx "user" .name) | nindent 12 }}
            - name: PAS_LISTEN
              value: "0.0.0.0:{{ .port }}"
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- range $k, $v := $values.env }}
            - name: {{ $k }}
              value: {{ $v | quote }}
            {{- end }}
          ports:
            - {name: http-metrics, containerPort: {{ .port }}}
          {{- include "pas.probes" $ctx | nindent 10 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- include "pas.containerSecurity" $ctx | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {}
{{- if $ctx.Values.metrics.serviceMonitor.enabled }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}-{{ .name }}-metrics
  labels:
    {{- include "pas.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  selector:
    {{- include "pas.selector" (dict "ctx" $ctx "component" .name) | nindent 4 }}
  ports:
    - {name: http-metrics, port: {{ .port }}, targetPort: http-metrics}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "pas.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  selector:
    matchLabels:
      {{- include "pas.selector" (dict "ctx" $ctx "component" .name) | nindent 6 }}
  endpoints:
    - port: http-metrics
      path: /metrics
      interval: {{ $ctx.Values.metrics.serviceMonitor.interval }}
{{- end }}
{{- end -}}
