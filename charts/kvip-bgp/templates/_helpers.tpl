{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "kvip-bgp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, unless it already contains the chart name. */}}
{{- define "kvip-bgp.fullname" -}}
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

{{- define "kvip-bgp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvip-bgp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kvip-bgp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kvip-bgp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kvip-bgp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret holding the MD5 passwords ("" when no peer has one). */}}
{{- define "kvip-bgp.passwordSecret" -}}
{{- if .Values.bgp.passwords.existingSecret }}
{{- .Values.bgp.passwords.existingSecret }}
{{- else if .Values.bgp.passwords.values }}
{{- printf "%s-md5" (include "kvip-bgp.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Address the HTTP server binds: 127.0.0.1 by default (the kubelet's probes run on the node,
and the pod shares the node's network), the node's address when a ServiceMonitor must
scrape it. "node" becomes the @NODE_IP@ token the init container replaces.
*/}}
{{- define "kvip-bgp.httpBind" -}}
{{- $bind := .Values.http.bindAddress }}
{{- if not $bind }}
{{- $bind = ternary "node" "127.0.0.1" .Values.serviceMonitor.enabled }}
{{- end }}
{{- if eq $bind "node" }}@NODE_IP@{{ else }}{{ $bind }}{{ end }}
{{- end }}

{{/* The http.listen value of the config file ("[v6]:port" for an IPv6 address). */}}
{{- define "kvip-bgp.httpListen" -}}
{{- $bind := include "kvip-bgp.httpBind" . }}
{{- if contains ":" $bind }}
{{- printf "[%s]:%d" $bind (int .Values.http.port) }}
{{- else }}
{{- printf "%s:%d" $bind (int .Values.http.port) }}
{{- end }}
{{- end }}

{{/*
The host the kubelet's HTTP probes connect to. Empty (the pod IP, which with hostNetwork is
the node's address) unless the server binds one specific other address, such as 127.0.0.1.
*/}}
{{- define "kvip-bgp.probeHost" -}}
{{- $bind := include "kvip-bgp.httpBind" . }}
{{- if not (has $bind (list "@NODE_IP@" "0.0.0.0" "::" "")) }}{{ $bind }}{{ end }}
{{- end }}

{{/*
The values behind config keys kvip-bgp cannot change while it runs (bgp.asn,
bgp.router_id, vips.interface, vips.bind, http.listen, log.format): their checksum is the
pod annotation that rolls the DaemonSet. Everything else reloads in place.
*/}}
{{- define "kvip-bgp.restartOnly" -}}
{{- list .Values.bgp.asn .Values.bgp.routerId .Values.vips.interface .Values.vips.bind (include "kvip-bgp.httpListen" .) .Values.log.format .Values.image | toJson }}
{{- end }}
