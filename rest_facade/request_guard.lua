-- netweave request guard: part of the FIRST HTTP filter (rendered into it ahead of
-- rest_facade/request_context.lua, whose envoy_on_request calls guard_request once the
-- request's correlation id is set: one Lua filter, one coroutine per request, instead of
-- two). It runs ahead of the identity headers' mutation, jwt_authn, the rate limit and the
-- shaper, and refuses two kinds of request that are not API calls before any other filter
-- reads them:
--   * CONNECT: this edge is an API, not a proxy. An HTTP/1.1 CONNECT otherwise became a
--     stream that waited for a body until a timeout (45-90 s). Now a 405 at once.
--   * a credential in the query string (?access_token=, ?api_key=, ... in any case, and
--     percent-encoded names too), for REST callers: 400. A URL ends up in logs, proxies and
--     browser history; tokens belong in the Authorization header. The value is replaced in
--     :path first (the edge audit log records :path), and the main access log takes the
--     query from what this filter records (netweave.request_guard:query), so no log line
--     ever holds it.
-- Native gRPC callers (content-type application/grpc*) send no query string; they pass.
-- Both refusals are local replies made in the filter chain: local_reply_config turns them into
-- ProblemDetails with the text below as detail (the REST marker, as rest_facade/shaper.lua
-- sets it, tells it that the reply body says what was wrong).

local REST_NAMESPACE = "netweave.rest"
-- Where the access log reads the query string (envoy/gateway.yaml.in).
local GUARD_NAMESPACE = "netweave.request_guard"

-- Query parameter names (compared lower-cased, percent-decoded) that carry a credential.
local CREDENTIAL_PARAMETERS = {
  access_token = true, token = true, id_token = true, api_key = true, apikey = true,
  password = true, client_secret = true,
}
local REDACTED = "REDACTED"

local function percent_decoded(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function parameter_name(raw)
  local name = percent_decoded((raw:gsub("%+", " ")))
  return string.lower(name:match("^%s*(.-)%s*$"))
end

-- The query with the value of every credential parameter replaced, and the first such
-- parameter's name; nil if the query holds none.
local function redacted_query(query)
  local found = nil
  local parts = {}
  for part in query:gmatch("[^&]+") do
    local raw_name, equals = part:match("^([^=]*)(=?)")
    local name = parameter_name(raw_name)
    if CREDENTIAL_PARAMETERS[name] then
      found = found or name
      if equals ~= "" then
        part = raw_name .. "=" .. REDACTED
      end
    end
    parts[#parts + 1] = part
  end
  if found == nil then
    return nil, nil
  end
  return table.concat(parts, "&"), found
end

-- `reply` already carries the correlation id (guard_request's caller set it): a reply made
-- by the filter itself must not depend on that filter seeing its own response.
local function refuse(handle, reply, body)
  handle:streamInfo():dynamicMetadata():set(REST_NAMESPACE, "rest", "1")
  handle:respond(reply, body)
end

-- `reply`: the headers every refusal carries (the correlation id). Returns nothing.
local function guard_request(handle, headers, reply)
  if headers:get(":method") == "CONNECT" then
    -- The target of a CONNECT is a host:port tunnel, which allows no method: an empty Allow.
    reply[":status"] = "405"
    reply["allow"] = ""
    refuse(handle, reply,
      "CONNECT is not supported: this is an API endpoint, not a proxy")
    return
  end
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    return
  end
  local path = headers:get(":path") or ""
  local base, query = path:match("^([^?]*)%?(.*)$")
  if query == nil then
    return
  end
  local redacted, name = redacted_query(query)
  handle:streamInfo():dynamicMetadata():set(GUARD_NAMESPACE, "query", redacted or query)
  if redacted == nil then
    return
  end
  headers:replace(":path", base .. "?" .. redacted)
  reply[":status"] = "400"
  refuse(handle, reply,
    "credentials are not accepted in the URL (query parameter '" .. name ..
    "'): send the token in the Authorization header")
end
