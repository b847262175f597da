-- netweave request context (Envoy Lua filter): the FIRST HTTP filter, so every request that
-- reaches the filter chain gets its context before any filter can refuse it. On the way out
-- the id is set on every reply natively (see the end of this file), not here.
--
-- Correlation id (issue 16; the header contract lives in netweave/headers.py):
--   the client's x-correlation-id if well formed, else its x-request-id if well formed,
--   else the x-request-id Envoy generated for this request. A malformed client value is
--   never forwarded. The id is sent to the core as x-correlation-id (the transcoder makes it
--   gRPC metadata) and as x-request-id (one id in every log line), returned on the response
--   as x-correlation-id, and recorded for the access logs.
--   Envoy regenerates x-request-id for every external request, so the client's value
--   arrives here under CLIENT_REQUEST_ID_HEADER, copied before that by the connection
--   manager's early header mutation (rest_facade/envoy_config.py); a client-sent copy of
--   that header is overwritten there.
-- Route template: the O2ims path template the request matched (the route metadata
--   rest_facade/envoy_routes.py writes), recorded before the transcoder re-routes the
--   request to its gRPC method: the `route` label of the edge's request metrics.
--
-- Rendered above this text by rest_facade/envoy_config.py: CORRELATION_ID_HEADER,
-- REQUEST_ID_HEADER, CLIENT_REQUEST_ID_HEADER, ID_PATTERN (a Lua pattern) and
-- ID_MAX_LENGTH, from netweave/headers.py.
-- Also rendered above it: rest_facade/request_guard.lua (guard_request), which this filter
-- runs once the correlation id is set. One Lua filter instead of two, on the way in only:
-- each Lua filter a request passes costs a coroutine.

-- Where the access logs read the id and the template (envoy/gateway.yaml.in).
local NAMESPACE = "netweave.request_context"

local function well_formed(value)
  return value ~= nil and #value <= ID_MAX_LENGTH and string.find(value, ID_PATTERN) ~= nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local id = headers:get(CORRELATION_ID_HEADER)
  if not well_formed(id) then
    id = headers:get(CLIENT_REQUEST_ID_HEADER)
    if not well_formed(id) then
      id = headers:get(REQUEST_ID_HEADER)
    end
  end
  headers:remove(CLIENT_REQUEST_ID_HEADER)
  local context = handle:streamInfo():dynamicMetadata()
  -- Its refusals carry the id themselves (a filter's own reply need not pass through it).
  local reply = {}
  if well_formed(id) then
    headers:replace(CORRELATION_ID_HEADER, id)
    headers:replace(REQUEST_ID_HEADER, id)
    context:set(NAMESPACE, "correlation_id", id)
    reply[CORRELATION_ID_HEADER] = id
  else
    -- Only if Envoy generated no request id (it always does at this edge).
    headers:remove(CORRELATION_ID_HEADER)
  end
  local route = handle:metadata():get("route")
  if route ~= nil then
    context:set(NAMESPACE, "route", route)
  end
  guard_request(handle, headers, reply)
end

-- No envoy_on_response: without one Envoy runs no Lua for this filter on the way out. The
-- correlation id on every reply and the 429's Retry-After are set natively by the
-- netweave.strip_identity_headers filter's response mutations (rest_facade/envoy_config.py).
