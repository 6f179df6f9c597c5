{{/*
Shared helpers: every role's workload is made by "blockferry.workload" from the role's
values; a template per role says only what is its own.
*/}}

{{- define "blockferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "blockferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: blockferry
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- end -}}

{{/* The selector of one role's pods: (dict "ctx" $ "role" "target-mover") */}}
{{- define "blockferry.selector" -}}
app.kubernetes.io/name: blockferry
app.kubernetes.io/instance: {{ .ctx.Release.Name | quote }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "blockferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "blockferry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "blockferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A role's Kafka user (SASL): (dict "ctx" $ "role" "target-mover") */}}
{{- define "blockferry.kafkaUser" -}}
{{- replace "{role}" .role .ctx.Values.kafka.security.username -}}
{{- end -}}

{{/* The values key of a role: target-mover -> targetMover */}}
{{- define "blockferry.valuesKey" -}}
{{- camelcase . | untitle -}}
{{- end -}}

{{/* Whether the orchestrator serves HTTPS */}}
{{- define "blockferry.apiScheme" -}}
{{- if .Values.orchestrator.tlsSecret -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/*
The settings file every role reads (BLOCKFERRY_CONFIG_FILE): what the values say, in
exactly the layout `blockferry config` prints, with `settings` merged over it.
*/}}
{{- define "blockferry.settings" -}}
{{- $security := dict "protocol" .Values.kafka.security.protocol "sasl_mechanism" .Values.kafka.security.saslMechanism "check_hostname" .Values.kafka.security.checkHostname -}}
{{- if hasPrefix "SASL" .Values.kafka.security.protocol -}}
{{- $_ := set $security "username" .Values.kafka.security.username -}}
{{- $_ := set $security "password_file" "/etc/blockferry/kafka/passwords/{role}" -}}
{{- end -}}
{{- if .Values.kafka.security.caSecret -}}
{{- $_ := set $security "ca_file" "/etc/blockferry/kafka/ca/ca.crt" -}}
{{- end -}}
{{- if .Values.kafka.security.clientCertSecret -}}
{{- $_ := set $security "cert_file" "/etc/blockferry/kafka/client/tls.crt" -}}
{{- $_ := set $security "key_file" "/etc/blockferry/kafka/client/tls.key" -}}
{{- end -}}
{{- $kafka := dict "bootstrap_servers" .Values.kafka.bootstrapServers "topic_prefix" .Values.kafka.topicPrefix "topic_partitions" .Values.kafka.topicPartitions "security" $security -}}
{{- $targetRepositories := dict -}}
{{- range $name, $where := .Values.repositories.targetMover -}}
{{- if or (hasPrefix "/" $where) (contains "://" $where) -}}
{{- $_ := set $targetRepositories $name $where -}}
{{- else -}}
{{- $_ := set $targetRepositories $name (printf "/var/lib/blockferry/repositories/%s" $where) -}}
{{- end -}}
{{- end -}}
{{- $ingestKeys := ternary "/etc/blockferry/repository-keys" "" (ne .Values.repositoryKeysSecret "") -}}
{{- $target := dict "repositories" $targetRepositories -}}
{{- $gateway := dict "repositories" .Values.repositories.gateway -}}
{{- if $ingestKeys -}}
{{- $_ := set $target "repository_keys_dir" $ingestKeys -}}
{{- $_ := set $gateway "repository_keys_dir" $ingestKeys -}}
{{- end -}}
{{- $http := dict "host" "0.0.0.0" "port" .Values.httpPort -}}
{{- $orchestrator := dict -}}
{{- if .Values.orchestrator.apiTokenSecret -}}
{{- $_ := set $orchestrator "api_token_file" "/etc/blockferry/api/token" -}}
{{- end -}}
{{- if .Values.orchestrator.jobs -}}
{{- $_ := set $orchestrator "jobs_file" "/etc/blockferry/jobs/jobs.yaml" -}}
{{- end -}}
{{- $sourceMover := dict -}}
{{- if .Values.dedupeKeysSecret -}}
{{- $_ := set $sourceMover "dedupe_keys_dir" "/etc/blockferry/dedupe-keys" -}}
{{- end -}}
{{- $guestProxy := dict -}}
{{- if .Values.guestProxy.sshSecret -}}
{{- $_ := set $guestProxy "ssh_client_keys" (list "/etc/blockferry/ssh/id_ed25519") -}}
{{- $_ := set $guestProxy "known_hosts_file" "/etc/blockferry/ssh/known_hosts" -}}
{{- end -}}
{{- $settings := dict "data_dir" "/var/lib/blockferry" "kafka" $kafka "http" $http "target_mover" $target "gateway" $gateway "orchestrator" $orchestrator "source_mover" $sourceMover "guest_proxy" $guestProxy -}}
{{- toYaml (mergeOverwrite $settings (deepCopy .Values.settings)) -}}
{{- end -}}

{{/*
One role's workload: (dict "ctx" $ "role" "target-mover" "kind" "StatefulSet")
*/}}
{{- define "blockferry.workload" -}}
{{- $ := .ctx -}}
{{- $role := .role -}}
{{- $values := index $.Values (include "blockferry.valuesKey" $role) -}}
{{- $name := printf "%s-%s" (include "blockferry.fullname" $) $role -}}
{{- $persistent := hasKey $values "persistence" -}}
{{- if and (eq $role "target-mover") (not $.Values.repositories.targetMover) -}}
{{- fail "targetMover.enabled: name its repositories in repositories.targetMover" -}}
{{- end -}}
{{- if and (eq $role "gateway") (not $.Values.repositories.gateway) -}}
{{- fail "gateway.enabled: name its repositories in repositories.gateway" -}}
{{- end -}}
{{- $sasl := hasPrefix "SASL" $.Values.kafka.security.protocol -}}
{{- if and $sasl (not $.Values.kafka.security.passwordsSecret) (not $.Values.strimzi.enabled) -}}
{{- fail (printf "kafka.security.protocol %s: name the Secret of the roles' passwords in kafka.security.passwordsSecret (or let Strimzi make them: strimzi.enabled)" $.Values.kafka.security.protocol) -}}
{{- end -}}
apiVersion: apps/v1
kind: {{ .kind }}
metadata:
  name: {{ $name }}
  labels:
    {{- include "blockferry.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  replicas: {{ $values.replicas }}
  {{- if eq .kind "StatefulSet" }}
  serviceName: {{ $name }}
  {{- if ne $role "orchestrator" }}
  podManagementPolicy: Parallel
  {{- end }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "blockferry.selector" (dict "ctx" $ "role" $role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "blockferry.labels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ $role }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/settings: {{ include "blockferry.settings" $ | sha256sum }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "blockferry.serviceAccountName" $ }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $.Values.podSecurityContext | nindent 8 }}
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $role }}
          image: {{ include "blockferry.image" $ | quote }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          args:
            - run
            - {{ $role }}
            {{- with $values.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: BLOCKFERRY_CONFIG_FILE
              value: /etc/blockferry/settings/settings.yaml
            - name: BLOCKFERRY_INSTANCE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- if and (eq $role "orchestrator") $values.tlsSecret }}
            # the API over HTTPS: the orchestrator's port alone
            - name: BLOCKFERRY_HTTP__TLS_CERT_FILE
              value: /etc/blockferry/http/tls.crt
            - name: BLOCKFERRY_HTTP__TLS_KEY_FILE
              value: /etc/blockferry/http/tls.key
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if and (eq $role "gateway") $values.credentialsSecret }}
          envFrom:
            - secretRef:
                name: {{ $values.credentialsSecret }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ $.Values.httpPort }}
              protocol: TCP
          {{- $scheme := ternary (include "blockferry.apiScheme" $) "HTTP" (eq $role "orchestrator") }}
          startupProbe:
            httpGet: {path: /healthz, port: http, scheme: {{ $scheme }}}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: {path: /healthz, port: http, scheme: {{ $scheme }}}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          readinessProbe:
            httpGet: {path: /readyz, port: http, scheme: {{ $scheme }}}
            periodSeconds: 5
            timeoutSeconds: 5
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          {{- $privileged := and (eq $role "source-mover") $values.blockDevices.enabled }}
          securityContext:
            {{- if $privileged }}
            {{- toYaml (merge (dict "privileged" true "allowPrivilegeEscalation" true) (omit $.Values.containerSecurityContext "allowPrivilegeEscalation")) | nindent 12 }}
            {{- else }}
            {{- toYaml $.Values.containerSecurityContext | nindent 12 }}
            {{- end }}
          volumeMounts:
            - {name: settings, mountPath: /etc/blockferry/settings, readOnly: true}
            - {name: data, mountPath: /var/lib/blockferry}
            - {name: tmp, mountPath: /tmp}
            {{- if $sasl }}
            - {name: kafka-password, mountPath: /etc/blockferry/kafka/passwords, readOnly: true}
            {{- end }}
            {{- if $.Values.kafka.security.caSecret }}
            - {name: kafka-ca, mountPath: /etc/blockferry/kafka/ca, readOnly: true}
            {{- end }}
            {{- if $.Values.kafka.security.clientCertSecret }}
            - {name: kafka-client, mountPath: /etc/blockferry/kafka/client, readOnly: true}
            {{- end }}
            {{- if and (has $role (list "target-mover" "gateway")) $.Values.repositoryKeysSecret }}
            - {name: repository-keys, mountPath: /etc/blockferry/repository-keys, readOnly: true}
            {{- end }}
            {{- if and (eq $role "source-mover") $.Values.dedupeKeysSecret }}
            - {name: dedupe-keys, mountPath: /etc/blockferry/dedupe-keys, readOnly: true}
            {{- end }}
            {{- if $privileged }}
            - {name: block-devices, mountPath: /dev}
            {{- end }}
            {{- if eq $role "orchestrator" }}
            {{- if $values.apiTokenSecret }}
            - {name: api-token, mountPath: /etc/blockferry/api, readOnly: true}
            {{- end }}
            {{- if $values.tlsSecret }}
            - {name: http-tls, mountPath: /etc/blockferry/http, readOnly: true}
            {{- end }}
            {{- if $values.jobs }}
            - {name: jobs, mountPath: /etc/blockferry/jobs, readOnly: true}
            {{- end }}
            {{- end }}
            {{- if and (eq $role "guest-proxy") $values.sshSecret }}
            - {name: ssh, mountPath: /etc/blockferry/ssh, readOnly: true}
            {{- end }}
            {{- with $values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: settings
          configMap:
            name: {{ include "blockferry.fullname" $ }}-settings
        {{- if not $persistent }}
        - name: data
          emptyDir: {}
        {{- end }}
        - name: tmp
          emptyDir: {}
        {{- if $sasl }}
        - name: kafka-password
          secret:
            {{- if $.Values.strimzi.enabled }}
            # the KafkaUser's, made by Strimzi's User Operator
            secretName: {{ include "blockferry.kafkaUser" (dict "ctx" $ "role" $role) }}
            defaultMode: 0400
            items:
              - {key: password, path: {{ $role }}}
            {{- else }}
            secretName: {{ $.Values.kafka.security.passwordsSecret }}
            defaultMode: 0400
            items:
              - {key: {{ $role }}, path: {{ $role }}}
            {{- end }}
        {{- end }}
        {{- with $.Values.kafka.security.caSecret }}
        - name: kafka-ca
          secret:
            secretName: {{ . }}
            items:
              - {key: ca.crt, path: ca.crt}
        {{- end }}
        {{- with $.Values.kafka.security.clientCertSecret }}
        - name: kafka-client
          secret:
            secretName: {{ . }}
            defaultMode: 0400
        {{- end }}
        {{- if and (has $role (list "target-mover" "gateway")) $.Values.repositoryKeysSecret }}
        - name: repository-keys
          secret:
            secretName: {{ $.Values.repositoryKeysSecret }}
            defaultMode: 0400
        {{- end }}
        {{- if and (eq $role "source-mover") $.Values.dedupeKeysSecret }}
        - name: dedupe-keys
          secret:
            secretName: {{ $.Values.dedupeKeysSecret }}
            defaultMode: 0400
        {{- end }}
        {{- if $privileged }}
        - name: block-devices
          hostPath:
            path: {{ $values.blockDevices.hostPath }}
            type: Directory
        {{- end }}
        {{- if eq $role "orchestrator" }}
        {{- with $values.apiTokenSecret }}
        - name: api-token
          secret:
            secretName: {{ . }}
            defaultMode: 0400
            items:
              - {key: token, path: token}
        {{- end }}
        {{- with $values.tlsSecret }}
        - name: http-tls
          secret:
            secretName: {{ . }}
            defaultMode: 0400
        {{- end }}
        {{- if $values.jobs }}
        - name: jobs
          configMap:
            name: {{ include "blockferry.fullname" $ }}-jobs
        {{- end }}
        {{- end }}
        {{- if and (eq $role "guest-proxy") $values.sshSecret }}
        - name: ssh
          secret:
            secretName: {{ $values.sshSecret }}
            defaultMode: 0400
        {{- end }}
        {{- with $values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  {{- if $persistent }}
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $values.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $values.persistence.size }}
  {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "blockferry.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  {{- if eq $role "orchestrator" }}
  type: {{ $values.service.type }}
  {{- else if eq .kind "StatefulSet" }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "blockferry.selector" (dict "ctx" $ "role" $role) | nindent 4 }}
  ports:
    - name: http
      port: {{ $.Values.httpPort }}
      targetPort: http
      protocol: TCP
{{- if gt (int $values.replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "blockferry.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "blockferry.selector" (dict "ctx" $ "role" $role) | nindent 6 }}
{{- end }}
{{- end -}}
