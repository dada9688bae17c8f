{{/* Names and labels. */}}
{{- define "seedwatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "seedwatch.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: call with (list $ "detector"). */}}
{{- define "seedwatch.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "seedwatch.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}

{{/* Flags of the metrics listener (health endpoints on the same port): per process, so not
in the configuration file (a collector pod's other containers serve none). */}}
{{- define "seedwatch.metricsArgs" -}}
- --metrics-addr=0.0.0.0:{{ .Values.metrics.port }}
{{- if .Values.tls.metricsSecret }}
- --metrics-tls-cert=/etc/seedwatch/metrics-tls/tls.crt
- --metrics-tls-key=/etc/seedwatch/metrics-tls/tls.key
{{- end }}
{{- if .Values.tls.metricsClientCaSecret }}
- --metrics-client-ca=/etc/seedwatch/metrics-client-ca/ca.crt
{{- end }}
{{- if .Values.tls.metricsTokenSecret }}
- --metrics-token-file=/etc/seedwatch/metrics-token/token
{{- end }}
{{- end -}}

{{- define "seedwatch.archive" -}}
{{- default "/archive" .Values.archive.url -}}
{{- end -}}

{{/* Environment every container gets: the configuration file and Kafka secret files. */}}
{{- define "seedwatch.env" -}}
- name: HOME
  value: /tmp
- name: SEEDWATCH_CONFIG
  value: /etc/seedwatch/config/seedwatch.yaml
{{- range .Values.kafka.secretSettings.names }}
- name: {{ printf "SEEDWATCH_KAFKA_%s_FILE" (. | upper | replace "." "_") }}
  value: {{ printf "/etc/seedwatch/kafka/%s" . }}
{{- end }}
{{- end -}}

{{- define "seedwatch.envFrom" -}}
{{- if .Values.archive.s3CredentialsSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.archive.s3CredentialsSecret }}
{{- end }}
{{- end -}}

{{/* Mounts shared by every seedwatch container; the volumes are in seedwatch.volumes. */}}
{{- define "seedwatch.mounts" -}}
- name: tmp
  mountPath: /tmp
- name: keys
  mountPath: /etc/seedwatch/keys
  readOnly: true
- name: config
  mountPath: /etc/seedwatch/config
  readOnly: true
{{- if .Values.rules.configMap }}
- name: rules
  mountPath: /etc/seedwatch/rules
  readOnly: true
{{- end }}
{{- if .Values.reference.configMap }}
- name: reference
  mountPath: /etc/seedwatch/reference
  readOnly: true
{{- end }}
{{- if .Values.kafka.secretSettings.existingSecret }}
- name: kafka-secrets
  mountPath: /etc/seedwatch/kafka
  readOnly: true
{{- end }}
{{- if .Values.tls.metricsSecret }}
- name: metrics-tls
  mountPath: /etc/seedwatch/metrics-tls
  readOnly: true
{{- end }}
{{- if .Values.tls.metricsClientCaSecret }}
- name: metrics-client-ca
  mountPath: /etc/seedwatch/metrics-client-ca
  readOnly: true
{{- end }}
{{- if .Values.tls.metricsTokenSecret }}
- name: metrics-token
  mountPath: /etc/seedwatch/metrics-token
  readOnly: true
{{- end }}
{{- if not .Values.archive.url }}
- name: archive
  mountPath: /archive
{{- end }}
{{- end -}}

{{/* Secret files are mounted 0400 (they are refused when others can read them). */}}
{{- define "seedwatch.volumes" -}}
- name: tmp
  emptyDir: {}
- name: keys
  secret:
    secretName: {{ .Values.keys.existingSecret }}
    defaultMode: 0400
- name: config
  configMap:
    name: {{ include "seedwatch.fullname" . }}-config
{{- if .Values.rules.configMap }}
- name: rules
  configMap:
    name: {{ .Values.rules.configMap }}
{{- end }}
{{- if .Values.reference.configMap }}
- name: reference
  configMap:
    name: {{ .Values.reference.configMap }}
{{- end }}
{{- if .Values.kafka.secretSettings.existingSecret }}
- name: kafka-secrets
  secret:
    secretName: {{ .Values.kafka.secretSettings.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- if .Values.tls.metricsSecret }}
- name: metrics-tls
  secret:
    secretName: {{ .Values.tls.metricsSecret }}
    defaultMode: 0400
{{- end }}
{{- if .Values.tls.metricsClientCaSecret }}
- name: metrics-client-ca
  secret:
    secretName: {{ .Values.tls.metricsClientCaSecret }}
{{- end }}
{{- if .Values.tls.metricsTokenSecret }}
- name: metrics-token
  secret:
    secretName: {{ .Values.tls.metricsTokenSecret }}
    defaultMode: 0400
{{- end }}
{{- if not .Values.archive.url }}
- name: archive
  persistentVolumeClaim:
    claimName: {{ include "seedwatch.fullname" . }}-archive
{{- end }}
{{- end -}}

{{- define "seedwatch.probes" -}}
{{- $scheme := ternary "HTTPS" "HTTP" (not (empty .Values.tls.metricsSecret)) -}}
livenessProbe:
  httpGet: {path: /healthz, port: metrics, scheme: {{ $scheme }}}
  periodSeconds: 20
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics, scheme: {{ $scheme }}}
  periodSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* Pod annotations: a changed configuration file rolls the pods that read it. */}}
{{- define "seedwatch.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
{{- end -}}

{{- define "seedwatch.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- with .Values.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
