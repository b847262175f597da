-- netweave identity filter (runs for REST and native gRPC, after jwt_authn, before the
-- per-client rate limiter):
--   x-netweave-client-cert: the verified client certificate, URL-encoded PEM, for the core
--     (netweave/headers.py CLIENT_CERT_HEADER). The core parses it as X.509: nothing inside
--     a certificate can change how the header is read.
--   x-netweave-client-id: the caller's identity, for the rate limiter's buckets
--     a verified client certificate: its first URI SAN (else "subject:" .. its subject)
--     otherwise a verified bearer token: "jwt:" .. its sub claim
-- Client-sent copies of both were already removed by the header_mutation filter.
local CLIENT_ID_HEADER = "x-netweave-client-id"
local CLIENT_CERT_HEADER = "x-netweave-client-cert"
local JWT_NAMESPACE = "envoy.filters.http.jwt_authn"

local function certificate_identity(handle)
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil or not ssl:peerCertificatePresented() then
    return nil
  end
  local uris = ssl:uriSanPeerCertificate()
  if uris ~= nil and #uris > 0 then
    return uris[1]
  end
  local subject = ssl:subjectPeerCertificate()
  if subject ~= nil and subject ~= "" then
    return "subject:" .. subject
  end
  return nil
end

local function token_identity(handle)
  local metadata = handle:streamInfo():dynamicMetadata():get(JWT_NAMESPACE)
  if metadata == nil then
    return nil
  end
  local payload = metadata["payload"]
  if payload == nil or type(payload["sub"]) ~= "string" or payload["sub"] == "" then
    return nil
  end
  return "jwt:" .. payload["sub"]
end

function envoy_on_request(handle)
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl ~= nil and ssl:peerCertificatePresented() and ssl:peerCertificateValidated() then
    handle:headers():replace(CLIENT_CERT_HEADER, ssl:urlEncodedPemEncodedPeerCertificate())
  end
  local identity = certificate_identity(handle) or token_identity(handle)
  if identity ~= nil then
    handle:headers():replace(CLIENT_ID_HEADER, identity)
  end
end

-- No envoy_on_response: without one Envoy runs no Lua for this filter on the way out. The
-- rate limiter's 429 gets its Retry-After in rest_facade/request_context.lua.
