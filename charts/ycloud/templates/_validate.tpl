{{- /*
Rules across several values, which values.schema.json cannot state with a readable message.
Included once, from configmap.yaml: each failure stops `helm install` before anything is
created and says what to change.
*/ -}}
{{- define "ycloud.validate" -}}
{{- $o := .Values.ovn -}}
{{- if and .Values.controller.enabled (not $o.deploy) (not $o.nbAddress) -}}
{{- fail "ovn.nbAddress is required: the OVN Northbound remotes, e.g. tcp:10.0.0.1:6641,tcp:10.0.0.2:6641 (or set ovn.deploy: true to run OVN from this chart)" -}}
{{- end -}}
{{- if and $o.deploy $o.nbAddress -}}
{{- fail "ovn.nbAddress must be empty with ovn.deploy: true (the chart points the controller at the OVN it deploys)" -}}
{{- end -}}
{{- if $o.deploy -}}
{{- $n := len $o.central.nodeIPs -}}
{{- if not (has $n (list 1 3 5)) -}}
{{- fail (printf "ovn.central.nodeIPs has %d addresses: a RAFT cluster needs 1, 3 or 5 (ovn.deploy: true)" $n) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.controller.enabled (contains "ssl:" (include "ycloud.nbAddress" .)) (not $o.tls.secretName) -}}
{{- fail "ovn.nbAddress has an ssl: remote, so ovn.tls.secretName must name a Secret with ca.crt, tls.crt and tls.key" -}}
{{- end -}}
{{- if and .Values.offload.hwOffload (eq .Values.cni.mode "veth") -}}
{{- fail "offload.hwOffload: true needs cni.mode smartnic, dpu-host or dpu (veth pods cannot be offloaded)" -}}
{{- end -}}
{{- if and (ne .Values.offload.tcPolicy "none") (not .Values.offload.hwOffload) -}}
{{- fail "offload.tcPolicy only applies with offload.hwOffload: true" -}}
{{- end -}}
{{- $names := dict -}}
{{- range .Values.eipGateways -}}
{{- if hasKey $names .name -}}
{{- fail (printf "eipGateways: the name %q appears twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- end -}}
{{- end -}}
