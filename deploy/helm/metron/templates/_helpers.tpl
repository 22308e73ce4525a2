{{- define "metron.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "metron.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "metron.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "metron.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "metron.secretName" -}}
{{ .Values.existingSecret | default (include "metron.fullname" .) }}
{{- end -}}

{{/* The pod template parts both roles share: annotations, env, probes, the config mount. */}}
{{- define "metron.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.service.port | quote }}
prometheus.io/path: /metrics
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "metron.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: METRON_NODE_ID
  value: $(POD_NAME)
- name: METRON_CONFIG
  value: /etc/metron/metron.yaml
- name: METRON_LISTEN
  value: 0.0.0.0:{{ .Values.service.port }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "metron.secretName" . }}
      key: DATABASE_URL
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "metron.secretName" . }}
      key: AWS_ACCESS_KEY_ID
      optional: true
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "metron.secretName" . }}
      key: AWS_SECRET_ACCESS_KEY
      optional: true
{{- end -}}

{{- define "metron.probes" -}}
ports:
  - name: http
    containerPort: {{ .Values.service.port }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 5
  failureThreshold: 60
{{- end -}}
