{{/*
A service's Deployment. (dict "root" $ "key" "toolenv") plus, for services with more than the common parts:
"resources" (YAML text, default the block's resources), "env", "ports", "volumes", "mounts" (YAML list text).
*/}}
{{- define "eigenloop.deployment" -}}
{{- $root := .root -}}
{{- $c := fromYaml (include "eigenloop.component" .) -}}
{{- $v := index $root.Values .key -}}
{{- $scope := dict "root" $root "c" $c "values" $v -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "eigenloop.metadata" $scope | nindent 2 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "eigenloop.selectorLabels" (dict "root" $root "component" $c.component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "eigenloop.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $c.component }}
      annotations:
        {{- include "eigenloop.podAnnotations" $scope | nindent 8 }}
    spec:
      {{- include "eigenloop.podCommon" $scope | nindent 6 }}
      containers:
        - name: {{ $c.component }}
          image: {{ include "eigenloop.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["--config", "/etc/eigenloop/config.yaml"]
          ports:
            {{- include "eigenloop.ports" $root | nindent 12 }}
            {{- with get . "ports" }}{{ . | nindent 12 }}{{ end }}
          env:
            {{- include "eigenloop.env" $scope | nindent 12 }}
            {{- with get . "env" }}{{ . | nindent 12 }}{{ end }}
          {{- include "eigenloop.probes" $scope | nindent 10 }}
          resources:
            {{- get . "resources" | default (toYaml $v.resources) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "eigenloop.volumeMounts" $scope | nindent 12 }}
            {{- with get . "mounts" }}{{ . | nindent 12 }}{{ end }}
      volumes:
        {{- include "eigenloop.volumes" $scope | nindent 8 }}
        {{- with get . "volumes" }}{{ . | nindent 8 }}{{ end }}
{{- end }}
