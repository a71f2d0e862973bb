{{- define "issueops.labels" -}}
app.kubernetes.io/name: issueops
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "issueops.selector" -}}
app.kubernetes.io/name: issueops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "issueops.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "issueops.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  fsGroup: 65532
  seccompProfile: { type: RuntimeDefault }
{{- end }}

{{- define "issueops.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: { drop: ["ALL"] }
{{- end }}

{{/* The optional credentials, as environment (files named by variables). */}}
{{- define "issueops.credentialEnv" -}}
{{- with .Values.secrets.githubApp }}
- name: ISSUEOPS_GITHUB_APP_ID
  valueFrom: { secretKeyRef: { name: {{ . }}, key: app-id } }
- name: ISSUEOPS_GITHUB_APP_KEY_FILE
  value: /etc/issueops/github/private-key.pem
{{- end }}
{{- with .Values.secrets.agentApiKey }}
- name: ISSUEOPS_AGENT_API_KEY_FILE
  value: /etc/issueops/agent/api-key
{{- end }}
{{- with .Values.secrets.uiOAuth }}
- name: ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE
  value: /etc/issueops/ui-oauth/client-secret
{{- end }}
{{- with .Values.secrets.uiCookieKey }}
- name: ISSUEOPS_UI_COOKIE_KEY_FILE
  value: /etc/issueops/ui-cookie/cookie-key
{{- end }}
{{- with .Values.secrets.signingKey }}
- name: ISSUEOPS_SIGNING_KEY_FILE
  value: /etc/issueops/signing/signing-key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "issueops.credentialMounts" -}}
{{- if .Values.secrets.githubApp }}
- { name: github-app, mountPath: /etc/issueops/github, readOnly: true }
{{- end }}
{{- if .Values.secrets.agentApiKey }}
- { name: agent-api-key, mountPath: /etc/issueops/agent, readOnly: true }
{{- end }}
{{- if .Values.secrets.uiOAuth }}
- { name: ui-oauth, mountPath: /etc/issueops/ui-oauth, readOnly: true }
{{- end }}
{{- if .Values.secrets.uiCookieKey }}
- { name: ui-cookie, mountPath: /etc/issueops/ui-cookie, readOnly: true }
{{- end }}
{{- if .Values.secrets.signingKey }}
- { name: signing, mountPath: /etc/issueops/signing, readOnly: true }
{{- end }}
{{- end }}

{{- define "issueops.credentialVolumes" -}}
{{- with .Values.secrets.githubApp }}
- name: github-app
  secret: { secretName: {{ . }}, items: [{ key: private-key.pem, path: private-key.pem }] }
{{- end }}
{{- with .Values.secrets.agentApiKey }}
- name: agent-api-key
  secret: { secretName: {{ . }}, items: [{ key: api-key, path: api-key }] }
{{- end }}
{{- with .Values.secrets.uiOAuth }}
- name: ui-oauth
  secret: { secretName: {{ . }}, items: [{ key: client-secret, path: client-secret }] }
{{- end }}
{{- with .Values.secrets.uiCookieKey }}
- name: ui-cookie
  secret: { secretName: {{ . }}, items: [{ key: cookie-key, path: cookie-key }] }
{{- end }}
{{- with .Values.secrets.signingKey }}
- name: signing
  secret: { secretName: {{ . }}, items: [{ key: signing-key, path: signing-key }], defaultMode: 256 }
{{- end }}
{{- end }}

{{- define "issueops.podExtras" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
