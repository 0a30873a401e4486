{{/* Name of the chart. */}}
{{- define "fgo.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-unique prefix of cluster-scoped objects (ClusterRoles, bindings). */}}
{{- define "fgo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Common labels; pass (dict "ctx" $ "component" "name"). */}}
{{- define "fgo.labels" -}}
app.kubernetes.io/name: {{ include "fgo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's own image values, if they name an image of ours: upstream's per-component
     images (ghcr.io/run-ai/fake-gpu-operator/<component>, in every release's values, so in a
     `helm upgrade --reuse-values` from upstream) cannot run our command lines and are ignored.
     Pass the component's image value; returns YAML. */}}
{{- define "fgo.componentImage" -}}
{{- $c := . | default dict -}}
{{- if hasPrefix "ghcr.io/run-ai/fake-gpu-operator/" (toString ($c.repository | default "")) -}}
{{- $c = dict -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Image of a component; pass (dict "ctx" $ "image" .Values.<component>.image). */}}
{{- define "fgo.image" -}}
{{- $g := .ctx.Values.image | default dict -}}
{{- $c := include "fgo.componentImage" .image | fromYaml -}}
{{- $repo := $c.repository | default $g.repository | default "ghcr.io/fake-gpu-operator/fake-gpu-operator" -}}
{{- $tag := $c.tag | default $g.tag | default .ctx.Chart.AppVersion -}}
{{- printf "%s:%v" $repo $tag -}}
{{- end -}}

{{- define "fgo.pullPolicy" -}}
{{- $g := .ctx.Values.image | default dict -}}
{{- $c := include "fgo.componentImage" .image | fromYaml -}}
{{- $c.pullPolicy | default $g.pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{- define "fgo.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Env every component gets. */}}
{{- define "fgo.commonEnv" -}}
- name: TOPOLOGY_CM_NAME
  value: topology
- name: TOPOLOGY_CM_NAMESPACE
  value: {{ .Release.Namespace }}
- name: FAKE_GPU_OPERATOR_NAMESPACE
  value: {{ .Release.Namespace }}
- name: RESOURCE_RESERVATION_NAMESPACE
  value: {{ (.Values.environment).resourceReservationNamespace | default "runai-reservation" }}
- name: RUST_LOG
  value: info
{{- end -}}

{{- define "fgo.nodeNameEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end -}}

{{/* Pod and container security for components that need no host access. On OpenShift
     (environment.openshift) the restricted-v2 SCC assigns the UID from the namespace's range
     and rejects any other, so no runAsUser/runAsGroup is set there. */}}
{{- define "fgo.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  {{- if not (.Values.environment).openshift }}
  runAsUser: 65532
  runAsGroup: 65532
  {{- end }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
{{- define "fgo.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* OpenShift: the rule that lets a ServiceAccount use the privileged SCC. */}}
{{- define "fgo.sccRule" -}}
{{- if (.Values.environment).openshift }}
- apiGroups: [security.openshift.io]
  resources: [securitycontextconstraints]
  resourceNames: [privileged]
  verbs: [use]
{{- end }}
{{- end -}}

{{/* The cluster topology document: .Values.cluster when set, else .Values.topology. */}}
{{- define "fgo.topology" -}}
{{- if .Values.cluster -}}
{{ toYaml .Values.cluster }}
{{- else -}}
{{ toYaml .Values.topology }}
{{- end -}}
{{- end -}}

{{/*
ServiceAccount + namespaced Role (ConfigMaps in the release namespace: read, or `cmVerbs`)
+ optional ClusterRole with `clusterRules` (YAML list), all bound to the ServiceAccount.
Pass (dict "ctx" $ "sa" "name" "component" "name" "clusterRules" "<yaml>" "cmVerbs" (list ...)).
*/}}
{{- define "fgo.rbac" -}}
{{- $ctx := .ctx -}}
{{- $fn := include "fgo.fullname" $ctx -}}
{{- $labels := include "fgo.labels" (dict "ctx" $ctx "component" .component) -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .sa }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .sa }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: {{ .cmVerbs | default (list "get" "list" "watch") | toJson }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .sa }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .sa }}
subjects:
  - kind: ServiceAccount
    name: {{ .sa }}
    namespace: {{ $ctx.Release.Namespace }}
{{- if or (trim (.clusterRules | default "")) (($ctx.Values.environment).openshift) }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $fn }}-{{ .sa }}
  labels:
    {{- $labels | nindent 4 }}
rules:
{{- with trim (.clusterRules | default "") }}
{{ . }}
{{- end }}
{{- if .privileged }}
{{- include "fgo.sccRule" $ctx }}
{{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $fn }}-{{ .sa }}
  labels:
    {{- $labels | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $fn }}-{{ .sa }}
subjects:
  - kind: ServiceAccount
    name: {{ .sa }}
    namespace: {{ $ctx.Release.Namespace }}
{{- end }}
{{- end -}}

{{/* Init container copying the fake NVML, the fake CUDA driver and nvidia-smi onto the node, for GPU containers. */}}
{{- define "fgo.installHostFiles" -}}
- name: install-host-files
  image: {{ include "fgo.image" (dict "ctx" .ctx "image" .image) }}
  imagePullPolicy: {{ include "fgo.pullPolicy" (dict "ctx" .ctx "image" .image) }}
  command: [/bin/sh, -ec]
  args:
    - |
      mkdir -p /host/lib /host/bin
      cp -f /usr/local/lib/fake-gpu-operator/libnvidia-ml.so.1 /host/lib/libnvidia-ml.so.1.tmp
      mv -f /host/lib/libnvidia-ml.so.1.tmp /host/lib/libnvidia-ml.so.1
      cp -f /usr/local/lib/fake-gpu-operator/libcuda.so.1 /host/lib/libcuda.so.1.tmp
      chmod 0755 /host/lib/libcuda.so.1.tmp
      mv -f /host/lib/libcuda.so.1.tmp /host/lib/libcuda.so.1
      cp -f /usr/local/bin/nvidia-smi /host/bin/nvidia-smi.tmp
      chmod 0755 /host/bin/nvidia-smi.tmp /host/lib/libnvidia-ml.so.1
      mv -f /host/bin/nvidia-smi.tmp /host/bin/nvidia-smi
  securityContext:
    runAsUser: 0
  volumeMounts:
    - name: fgo-host
      mountPath: /host
{{- end -}}

{{- define "fgo.hostFileEnv" -}}
- name: FAKEGPU_NVML_LIB
  value: /var/lib/fake-gpu-operator/lib/libnvidia-ml.so.1
- name: FAKEGPU_CUDA_LIB
  value: /var/lib/fake-gpu-operator/lib/libcuda.so.1
- name: FAKEGPU_NVIDIA_SMI
  value: /var/lib/fake-gpu-operator/bin/nvidia-smi
- name: FAKEGPU_NODE_DIR
  value: {{ include "fgo.nodeDir" . }}
{{- end -}}

{{/* The node dir on every node (hostPath /var/lib/fake-gpu-operator): the node-local
     status-exporter writes `<node>/config.json` and the live state there, the device and DRA
     plugins read them, GPU containers get `<node>/` mounted (docs/operator-interfaces.md §3). */}}
{{- define "fgo.nodeDir" -}}
/var/lib/fake-gpu-operator/nodes
{{- end -}}

{{/*
The resource.k8s.io version DRA objects are rendered in: the highest the API server serves (v1,
else v1beta2, else v1beta1), as the operator's components choose at run time (docs/kubelet-plugins.md).
A live install knows the served kinds ("resource.k8s.io/v1beta1/DeviceClass"); `helm template`
knows only helm's built-in group/versions (which include v1) unless given
`--api-versions resource.k8s.io/<version>/DeviceClass`, so kinds decide first.
*/}}
{{- define "fgo.draApiVersion" -}}
{{- $caps := .Capabilities.APIVersions -}}
{{- $chosen := "" -}}
{{- range list "v1" "v1beta2" "v1beta1" -}}
{{- if and (not $chosen) ($caps.Has (printf "resource.k8s.io/%s/DeviceClass" .)) -}}
{{- $chosen = . -}}
{{- end -}}
{{- end -}}
{{- range list "v1" "v1beta2" "v1beta1" -}}
{{- if and (not $chosen) ($caps.Has (printf "resource.k8s.io/%s" .)) -}}
{{- $chosen = . -}}
{{- end -}}
{{- end -}}
resource.k8s.io/{{ $chosen | default "v1" }}
{{- end -}}

{{/* Keeps a node component of ours off the nodes of `gpu.backend: mock` pools, which NVIDIA's own
     components serve over the fake NVML (the status-updater labels them
     fake-gpu-operator.run.ai/backend=mock; docs/mock-backend.md). */}}
{{- define "fgo.notMockAffinity" -}}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: fake-gpu-operator.run.ai/backend, operator: NotIn, values: [mock]}
{{- end -}}
