-- netweave request context (Envoy Lua filter): the FIRST HTTP filter, so every request that
-- reaches the filter chain gets its context before any filter can refuse it, and every
-- response (upstream, local reply, direct response) passes through it on the way out.
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
-- runs once the correlation id is set; and on the way out, the rate limiter's 429 gets its
-- Retry-After here (it used to be a second Lua step of the identity filter). One Lua filter
-- instead of two on the way in and out: each Lua filter a request passes costs a coroutine.

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
  if well_formed(id) then
    headers:replace(CORRELATION_ID_HEADER, id)
    headers:replace(REQUEST_ID_HEADER, id)
    context:set(NAMESPACE, "correlation_id", id)
  else
    -- Only if Envoy generated no request id (it always does at this edge).
    headers:remove(CORRELATION_ID_HEADER)
  end
  local route = handle:metadata():get("route")
  if route ~= nil then
    context:set(NAMESPACE, "route", route)
  end
  -- Its refusals carry the id themselves (a filter's own reply need not pass through it).
  local reply = {}
  if well_formed(id) then
    reply[CORRELATION_ID_HEADER] = id
  end
  guard_request(handle, headers, reply)
end

-- The rate limiter's 429 passes back through this filter (the first one), with the
-- limiter's x-ratelimit-* headers already set: tell the client when to come back.
-- x-ratelimit-reset is the seconds until a token is available again; Retry-After must be a
-- whole number of seconds, and at least 1 so that a client does not spin.
local function add_retry_after(headers)
  if headers:get(":status") ~= "429" or headers:get("retry-after") ~= nil then
    return
  end
  local reset = tonumber(headers:get("x-ratelimit-reset") or "") or 1
  if reset < 1 then
    reset = 1
  end
  headers:add("retry-after", tostring(math.floor(reset)))
end

function envoy_on_response(handle)
  local headers = handle:headers()
  add_retry_after(headers)
  local context = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
  if context ~= nil and context["correlation_id"] ~= nil then
    headers:replace(CORRELATION_ID_HEADER, context["correlation_id"])
  end
end
