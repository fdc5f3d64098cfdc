{{/* The chart's name, and the objects' name: release + chart, at most 63 characters. */}}
{{- define "ebroker-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ebroker-node.fullname" -}}
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

{{- define "ebroker-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebroker-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ebroker-node.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ebroker-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ebroker
{{- end }}

{{- define "ebroker-node.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ebroker-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ebroker-node.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces of the config's kubernetes platforms (in the cluster), one per line. */}}
{{- define "ebroker-node.kubernetesNamespaces" -}}
{{- $namespaces := list }}
{{- range (.Values.config.platforms | default list) }}
{{- if eq (.type | default "") "kubernetes" }}
{{- $options := .options | default dict }}
{{- $namespaces = append $namespaces (default $.Release.Namespace $options.namespace) }}
{{- end }}
{{- end }}
{{- $namespaces | uniq | join "\n" }}
{{- end }}

{{/* Where the node keeps its SQLite file and the sessions' workdirs. */}}
{{- define "ebroker-node.dataDir" -}}/var/lib/ebroker/data{{- end }}
{{- define "ebroker-node.secretsDir" -}}/run/secrets/ebroker{{- end }}
{{- define "ebroker-node.configDir" -}}/etc/ebroker{{- end }}

{{- define "ebroker-node.publicUrl" -}}
{{- if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- end }}
{{- end }}

{{/* The node's configuration as the ConfigMap holds it: config, with what the chart owns. */}}
{{- define "ebroker-node.nodeConfig" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $server := deepCopy (get $config "server" | default dict) }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.containerPort) }}
{{- $url := include "ebroker-node.publicUrl" . }}
{{- if and $url (not (hasKey $server "public_url")) }}{{ $_ := set $server "public_url" $url }}{{ end }}
{{- $_ := set $config "server" $server }}
{{- $database := deepCopy (get $config "database" | default dict) }}
{{- if eq .Values.database.type "sqlite" }}
{{- $_ := set $database "url" (printf "sqlite:///%s/ebroker.db" (include "ebroker-node.dataDir" .)) }}
{{- $_ := set $database "migrate_on_start" true }}
{{- else }}
{{- $_ := set $database "migrate_on_start" (not .Values.migration.enabled) }}
{{- end }}
{{- $_ := set $config "database" $database }}
{{- $lifecycle := deepCopy (get $config "lifecycle" | default dict) }}
{{- if not (hasKey $lifecycle "workdir") }}{{ $_ := set $lifecycle "workdir" (printf "%s/sessions" (include "ebroker-node.dataDir" .)) }}{{ end }}
{{- $_ := set $config "lifecycle" $lifecycle }}
{{- toYaml $config }}
{{- end }}

{{/* The Secret the chart makes: the database URL and the secretFiles given as values. */}}
{{- define "ebroker-node.ownSecretData" -}}
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
{{- define "ebroker-node.secretSources" -}}
{{- $own := include "ebroker-node.ownSecretData" . | fromYaml }}
{{- if $own }}
- secret:
    name: {{ include "ebroker-node.fullname" . }}
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

{{- define "ebroker-node.databaseEnv" -}}
{{- if eq .Values.database.type "postgresql" }}
- name: EBROKER_DATABASE__URL_FILE
  value: {{ printf "%s/database-url" (include "ebroker-node.secretsDir" .) | quote }}
{{- end }}
{{- end }}

{{/* The pod's volumes for config, secrets and scratch (/tmp, the workers' config file). */}}
{{- define "ebroker-node.volumes" -}}
- name: config
  configMap:
    name: {{ include "ebroker-node.fullname" . }}
{{- $sources := include "ebroker-node.secretSources" . }}
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

{{- define "ebroker-node.volumeMounts" -}}
- {name: config, mountPath: {{ include "ebroker-node.configDir" . }}, readOnly: true}
{{- if include "ebroker-node.secretSources" . }}
- {name: secrets, mountPath: {{ include "ebroker-node.secretsDir" . }}, readOnly: true}
{{- end }}
- {name: tmp, mountPath: /tmp}
{{- end }}
