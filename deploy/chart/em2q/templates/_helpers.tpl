{{/* Labels shared by every resource; the component label is added per resource. */}}
{{- define "em2q.labels" -}}
app.kubernetes.io/name: em2q
app.kubernetes.io/part-of: {{ .Values.partOf }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "em2q.elasticsearchUrl" -}}
{{- .Values.elasticsearch.url | default (printf "http://%s-es-http.%s.svc:9200" .Values.elasticsearch.clusterName .Release.Namespace) -}}
{{- end -}}

{{- define "em2q.minioEndpoint" -}}
{{- printf "http://em2q-minio.%s.svc:9000" .Release.Namespace -}}
{{- end -}}

{{/* MinIO's pods: labels of their own, outside the platform's NetworkPolicy peers. */}}
{{- define "em2q.minioSelector" -}}
app.kubernetes.io/name: minio
app.kubernetes.io/instance: em2q-minio
{{- end -}}
