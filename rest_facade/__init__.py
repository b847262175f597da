"""Everything that makes Envoy's gRPC-JSON transcoding speak exact O2ims REST: the HTTP
rules read from the descriptor set (http_rules), the routes and the Envoy configuration
rendered from them (envoy_routes, envoy_config, envoy/gateway.yaml.in), the REST shaper,
the ProblemDetails mapping of Envoy's own replies, the OpenAPI document (openapi), and
running Envoy itself."""
