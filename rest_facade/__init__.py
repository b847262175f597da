"""Everything that makes Envoy's gRPC-JSON transcoding speak exact O2ims REST: the Envoy
configuration (rendered from envoy/gateway.yaml.in), the Lua response shaper, the
ProblemDetails mapping of Envoy's own replies, and running Envoy itself."""
