{{/* The chart's name, and the objects' name: release + chart, at most 63 characters. */}}
{{- define "ebroker-aggregator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ebroker-aggregator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ebroker-aggregator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebroker-aggregator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ebroker-aggregator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ebroker-aggregator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ebroker
{{- end }}

{{- define "ebroker-aggregator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ebroker-aggregator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ebroker-aggregator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the aggregator keeps its SQLite file. */}}
{{- define "ebroker-aggregator.dataDir" -}}/var/lib/ebroker/data{{- end }}
{{- define "ebroker-aggregator.secretsDir" -}}/run/secrets/ebroker{{- end }}
{{- define "ebroker-aggregator.configDir" -}}/etc/ebroker{{- end }}

{{- define "ebroker-aggregator.publicUrl" -}}
{{- if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- end }}
{{- end }}

{{/* The aggregator's configuration as the ConfigMap holds it: config, with what the chart owns. */}}
{{- define "ebroker-aggregator.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $server := deepCopy (get $config "server" | default dict) }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.containerPort) }}
{{- $url := include "ebroker-aggregator.publicUrl" . }}
{{- if and $url (not (hasKey $server "public_url")) }}{{ $_ := set $server "public_url" $url }}{{ end }}
{{- $_ := set $config "server" $server }}
{{- $database := deepCopy (get $config "database" | default dict) }}
{{- if eq .Values.database.type "sqlite" }}
{{- $_ := set $database "url" (printf "sqlite:///%s/ebroker-aggregator.db" (include "ebroker-aggregator.dataDir" .)) }}
{{- $_ := set $database "migrate_on_start" true }}
{{- else }}
{{- $_ := set $database "migrate_on_start" (not .Values.migration.enabled) }}
{{- end }}
{{- $_ := set $config "database" $database }}
{{- toYaml $config }}
{{- end }}

{{/* The Secret the chart makes: the database URL and the secretFiles given as values. */}}
{{- define "ebroker-aggregator.ownSecretData" -}}
{{- $data := dict }}
{{- if and (eq .Values.database.type "postgresql") (not .Values.database.postgresql.existingSecret) }}
{{- $_ := set $data "database-url" .Values.database.postgresql.url }}
{{- end }}
{{- range .Values.secretFiles }}
{{- if hasKey . "value" }}{{ $_ := set $data .file .value }}{{ end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* The projected volume's sources: every secret file under /run/secrets/ebroker. */}}
{{- define "ebroker-aggregator.secretSources" -}}
{{- $own := include "ebroker-aggregator.ownSecretData" . | fromYaml }}
{{- if $own }}
- secret:
    name: {{ include "ebroker-aggregator.fullname" . }}
    items:
      {{- range $key, $_ := $own }}
      - {key: {{ $key | quote }}, path: {{ $key | quote }}}
      {{- end }}
{{- end }}
{{- if and (eq .Values.database.type "postgresql") .Values.database.postgresql.existingSecret }}
- secret:
    name: {{ .Values.database.postgresql.existingSecret | quote }}
    items:
      - {key: {{ .Values.database.postgresql.existingSecretKey | quote }}, path: database-url}
{{- end }}
{{- range .Values.secretFiles }}
{{- if not (hasKey . "value") }}
- secret:
    name: {{ .secret | quote }}
    items:
      - {key: {{ .key | quote }}, path: {{ .file | quote }}}
{{- end }}
{{- end }}
{{- end }}

{{- define "ebroker-aggregator.databaseEnv" -}}
{{- if eq .Values.database.type "postgresql" }}
- name: EBROKER_DATABASE__URL_FILE
  value: {{ printf "%s/database-url" (include "ebroker-aggregator.secretsDir" .) | quote }}
{{- end }}
{{- end }}

{{/* The pod's volumes for config, secrets and scratch (/tmp, the workers' config file). */}}
{{- define "ebroker-aggregator.volumes" -}}
- name: config
  configMap:
    name: {{ include "ebroker-aggregator.fullname" . }}
{{- $sources := include "ebroker-aggregator.secretSources" . }}
{{- if $sources }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- $sources | trim | nindent 6 }}
{{- end }}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 64Mi}
{{- end }}

{{- define "ebroker-aggregator.volumeMounts" -}}
- {name: config, mountPath: {{ include "ebroker-aggregator.configDir" . }}, readOnly: true}
{{- if include "ebroker-aggregator.secretSources" . }}
- {name: secrets, mountPath: {{ include "ebroker-aggregator.secretsDir" . }}, readOnly: true}
{{- end }}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{/* The upstreams' names, as a JSON list (the helm test compares them). */}}
{{- define "ebroker-aggregator.upstreamNames" -}}
{{- $names := list }}
{{- range (.Values.config.upstreams | default list) }}{{ $names = append $names .name }}{{ end }}
{{- toJson $names }}
{{- end }}
