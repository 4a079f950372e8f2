{{/*
The services, keyed by their values block. `py` is the Python name (env prefix EIGENLOOP_<PY>_, address
variable EIGENLOOP_ADDRESSES_<PY>); `callers` are the services whose pods may open gRPC streams to it
(NetworkPolicy); `headless` services are balanced client-side per stream over every pod address.
*/}}
{{- define "eigenloop.catalog" -}}
toolenv: {py: toolenv, callers: [trainer, generator, validator], headless: true}
userSim: {py: user_sim, callers: [trainer], headless: true}
generator: {py: generator, callers: [trainer, validator], headless: false}
validator: {py: validator, callers: [trainer], headless: false}
inference: {py: inference, callers: [trainer], headless: false}
trainer: {py: trainer, callers: [], headless: false}
{{- end }}

{{/* One service's facts: (dict "root" $ "key" "userSim") -> catalog entry plus component and fullname. */}}
{{- define "eigenloop.component" -}}
{{- $entry := get (fromYaml (include "eigenloop.catalog" .root)) .key -}}
{{- $component := $entry.py | replace "_" "-" -}}
{{- $_ := set $entry "component" $component -}}
{{- $_ := set $entry "name" (printf "%s-%s" (include "eigenloop.fullname" .root) $component | trunc 63 | trimSuffix "-") -}}
{{- $_ := set $entry "envPrefix" (printf "EIGENLOOP_%s_" (upper $entry.py)) -}}
{{- toYaml $entry -}}
{{- end }}

{{- define "eigenloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "eigenloop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "eigenloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "eigenloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eigenloop
{{- end }}

{{/* Selector labels of one service's pods: (dict "root" $ "component" "user-sim"). */}}
{{- define "eigenloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eigenloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Metadata of a namespaced object that belongs to one service: (dict "root" $ "c" $component). */}}
{{- define "eigenloop.metadata" -}}
name: {{ .c.name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "eigenloop.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .c.component }}
{{- end }}

{{- define "eigenloop.image" -}}
{{- $repo := .image.repository -}}
{{- if .root.Values.image.registry -}}{{- $repo = printf "%s/%s" .root.Values.image.registry $repo -}}{{- end -}}
{{- printf "%s:%s" $repo (.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end }}

{{/* True when the Prometheus Operator CRDs are served (both spellings: Has matches exact strings). */}}
{{- define "eigenloop.operatorCRDs" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end }}

{{- define "eigenloop.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "eigenloop.fullname" .)) -}}
{{- end }}

{{/* gRPC address of a service for clients: a dns:/// target, so every pod behind a headless Service is used. */}}
{{- define "eigenloop.address" -}}
{{- $c := fromYaml (include "eigenloop.component" .) -}}
{{- printf "dns:///%s.%s.svc.cluster.local:%v" $c.name .root.Release.Namespace .root.Values.ports.grpc -}}
{{- end }}

{{/*
The settings every server reads from EIGENLOOP_<PY>_*: bind address, ports, replica id (the pod name), drain
time, TLS and token; then where every enabled service is. (dict "root" $ "c" $component "values" $block)
*/}}
{{- define "eigenloop.env" -}}
{{- $root := .root -}}
{{- $p := .c.envPrefix -}}
- name: {{ $p }}HOST
  value: "0.0.0.0"
- name: {{ $p }}PORT
  value: {{ $root.Values.ports.grpc | quote }}
- name: {{ $p }}METRICS_PORT
  value: {{ $root.Values.ports.metrics | quote }}
- name: {{ $p }}GRACE_PERIOD_S
  value: {{ $root.Values.drainSeconds | quote }}
- name: {{ $p }}REPLICA_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if $root.Values.auth.enabled }}
- name: {{ $p }}AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "eigenloop.authSecret" $root }}
      key: token
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: {{ $p }}TLS_CERT
  value: /etc/eigenloop/tls/tls.crt
- name: {{ $p }}TLS_KEY
  value: /etc/eigenloop/tls/tls.key
# Outgoing channels verify servers with the same CA and present this pod's certificate.
- name: {{ $p }}TLS_CA
  value: /etc/eigenloop/tls/ca.crt
{{- if $root.Values.tls.mutual }}
- name: {{ $p }}TLS_CLIENT_CA
  value: /etc/eigenloop/tls/ca.crt
{{- end }}
{{- end }}
{{- range $key, $entry := fromYaml (include "eigenloop.catalog" $root) }}
{{- if (index $root.Values $key).enabled }}
- name: EIGENLOOP_ADDRESSES_{{ upper $entry.py }}
  value: {{ include "eigenloop.address" (dict "root" $root "key" $key) | quote }}
{{- end }}
{{- end }}
{{- with .values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Readiness, liveness and startup probes on the gRPC health service (NOT_SERVING while draining takes the pod
out of its Service). With TLS the kubelet cannot speak gRPC to the server, so the probes check the TCP port.
*/}}
{{- define "eigenloop.probes" -}}
{{- $check := dict "grpc" (dict "port" (int .root.Values.ports.grpc)) -}}
{{- if .root.Values.tls.enabled -}}{{- $check = dict "tcpSocket" (dict "port" "grpc") -}}{{- end -}}
startupProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 5
  failureThreshold: {{ div (dig "startupSeconds" 60 .values) 5 }}
readinessProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{- define "eigenloop.ports" -}}
- name: grpc
  containerPort: {{ .Values.ports.grpc }}
- name: metrics
  containerPort: {{ .Values.ports.metrics }}
{{- end }}

{{/* Pod metadata annotations: config checksum (restart on change) and scrape hints without the operator. */}}
{{- define "eigenloop.podAnnotations" -}}
checksum/config: {{ toYaml .values.config | sha256sum }}
{{- if not (include "eigenloop.operatorCRDs" .root) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every pod has: /tmp (the root filesystem is read-only), its config file, and the TLS secret. */}}
{{- define "eigenloop.volumes" -}}
- name: tmp
  emptyDir: {}
- name: config
  configMap:
    name: {{ .c.name }}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .root.Values.tls.secretName }}
{{- end }}
{{- end }}

{{- define "eigenloop.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: config
  mountPath: /etc/eigenloop/config.yaml
  subPath: config.yaml
  readOnly: true
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/eigenloop/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Scheduling, service account and security shared by every pod spec. */}}
{{- define "eigenloop.podCommon" -}}
serviceAccountName: {{ .c.name }}
automountServiceAccountToken: {{ eq .c.py "trainer" }}
terminationGracePeriodSeconds: {{ add .root.Values.drainSeconds 5 }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The per-service GPU request merged into its resources: (dict "resources" $r "gpus" N). */}}
{{- define "eigenloop.gpuResources" -}}
{{- $r := deepCopy .resources -}}
{{- $gpu := dict "nvidia.com/gpu" (int .gpus) -}}
{{- $_ := set $r "limits" (merge (deepCopy (default (dict) $r.limits)) $gpu) -}}
{{- $_ := set $r "requests" (merge (deepCopy (default (dict) $r.requests)) $gpu) -}}
{{- toYaml $r -}}
{{- end }}

{{/* Claim holding inference's model. */}}
{{- define "eigenloop.modelClaim" -}}
{{- .Values.inference.model.existingClaim | default (printf "%s-inference-models" (include "eigenloop.fullname" .)) -}}
{{- end }}

{{/* Claim name of a persistence volume: (dict "root" $ "key" "data"). */}}
{{- define "eigenloop.claim" -}}
{{- (index .root.Values.persistence .key).existingClaim | default (printf "%s-%s" (include "eigenloop.fullname" .root) .key) -}}
{{- end }}

{{/*
A claim the chart creates and pods on several nodes mount needs an access mode that allows it:
(dict "replicas" N "accessModes" list "allowed" list "existingClaim" name "what" "values path").
*/}}
{{- define "eigenloop.sharedClaimCheck" -}}
{{- if and (gt (int .replicas) 1) (not .existingClaim) -}}
{{- $ok := false -}}
{{- range .allowed -}}{{- if has . $.accessModes -}}{{- $ok = true -}}{{- end -}}{{- end -}}
{{- if not $ok -}}
{{- fail (printf "%s: %v pods mount this claim, so %s.accessModes must include %s (got %v)" .what .replicas .what (join " or " .allowed) .accessModes) -}}
{{- end -}}
{{- end -}}
{{- end }}
