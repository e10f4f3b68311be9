{{/* Names, labels and the pod parts every tradebot container shares. */}}

{{- define "tradebot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tradebot.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selects the pods of one role: (dict "root" $ "role" "strategy"). */}}
{{- define "tradebot.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role | replace "_" "-" }}
{{- end -}}

{{- define "tradebot.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "tradebot.fullname" .)) -}}
{{- end -}}

{{- define "tradebot.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Settings: the ConfigMap (plain settings) and the Secret (keys and server URLs), by reference only. */}}
{{- define "tradebot.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "tradebot.fullname" . }}-config
  - secretRef:
      name: {{ include "tradebot.secretName" . }}
{{- end -}}

{{- define "tradebot.podSecurity" -}}
enableServiceLinks: false   # service links would add *_PORT variables next to the settings
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: data              # DATA_DIR (/app/.tradebot): the universe cache; the root filesystem is read-only
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- end -}}

{{- define "tradebot.volumeMounts" -}}
volumeMounts:
  - name: data
    mountPath: /app/.tradebot
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/* The image's health check, as a probe: (dict "probe" .Values.probes.liveness). */}}
{{- define "tradebot.probe" -}}
exec:
  command: [python, -m, tradebot.healthcheck]
{{- toYaml .probe | nindent 0 }}
{{- end -}}
