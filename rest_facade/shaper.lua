-- netweave REST shaper (Envoy Lua filter, placed BEFORE the gRPC-JSON transcoder, so on
-- the way in it sees the client's REST request and on the way out the transcoded JSON). It
-- closes the gap between what the transcoder does and the O2ims wire contract:
--   * requests whose path or query is not UTF-8 once percent-decoded: 400 (the core could
--     not even decode the gRPC request, and would answer 500); dot segments: 400
--   * bare boolean query flags (`?all_fields`) get their implied `=true`
--   * list responses: {"nextPageToken":"..","resourcePools":[..]} -> the bare array [..]
--   * google.protobuf.Empty responses (DELETE): no body at all instead of `{}`
--   * `x-o2ims-http-status` from the core (201 on create, with `location`) becomes the HTTP
--     status of a success
--   * gRPC UNIMPLEMENTED (a published API the core does not serve): 404, not 501
--   * upstream errors: google.rpc.Status JSON -> RFC 7807 application/problem+json
--   * no grpc-* or internal x-o2ims-* headers leak to REST clients
-- Native gRPC callers (content-type application/grpc*) pass through untouched.
--
-- What a response is (list, empty) comes from the route: rest_facade/envoy_routes.py puts
-- it into each gRPC method route's metadata, derived from the descriptor set.

-- Request side records "this is REST" here; the access log reads grpc_status from it too,
-- and local_reply_config tells replies made inside the filter chain by the `rest` key.
local NAMESPACE = "netweave.rest"

-- The HTTP statuses the transcoder maps gRPC codes to; anything else is titled "Error".
local REASON_PHRASES = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [409] = "Conflict", [412] = "Precondition Failed",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [499] = "Client Closed Request",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local STRIPPED_HEADERS = {
  "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding",
  "grpc-encoding",
  -- Pre-`x-o2ims-` spelling of the status override; honoured, and never leaked either.
  "x-http-status",
}

local GRPC_UNKNOWN = "2"
local GRPC_RESOURCE_EXHAUSTED = "8"
local GRPC_FAILED_PRECONDITION = "9"
local GRPC_UNIMPLEMENTED = "12"

local function starts_with(text, prefix)
  return text:sub(1, #prefix) == prefix
end

-- The raw (still JSON-escaped) value of the first `"key":"..."` in `body`, or nil. Copying
-- the escaped bytes verbatim into our own JSON string keeps it correctly escaped.
-- Protobuf's JSON printer emits fields in field-number order without spaces, so for
-- google.rpc.Status the first "message" is the top-level one, ahead of any details.
local function raw_json_string(body, key)
  local _, last = body:find('"' .. key .. '":"', 1, true)
  if last == nil then
    return nil
  end
  local i = last + 1
  while i <= #body do
    local byte = body:byte(i)
    if byte == 92 then -- backslash: skip the escaped character, which may be a quote
      i = i + 2
    elseif byte == 34 then -- the closing quote
      return body:sub(last + 1, i - 1)
    else
      i = i + 1
    end
  end
  return nil
end

-- The array of the collection field `name` in a list response body. The transcoder's field
-- order is not guaranteed, but the only other field is the page token, which is base64url
-- (no brackets, no quotes): so the array runs from `"name":[` to the last "]" of the body.
local function bare_array(body, name)
  local _, open = body:find('"' .. name .. '":[', 1, true)
  if open == nil then
    return "[]" -- an empty collection the printer left out
  end
  for close = #body, open, -1 do
    if body:byte(close) == 93 then
      return body:sub(open, close)
    end
  end
  return "[]"
end

-- Whether `text` is well-formed UTF-8 as protobuf requires of string fields: no overlong
-- forms, no surrogates, nothing above U+10FFFF.
local function valid_utf8(text)
  local i, n = 1, #text
  while i <= n do
    local c = text:byte(i)
    local count, low, high = 0, 0x80, 0xBF
    if c < 0x80 then
      count = 0
    elseif c >= 0xC2 and c <= 0xDF then
      count = 1
    elseif c >= 0xE0 and c <= 0xEF then
      count = 2
      if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      count = 3
      if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    else
      return false
    end
    for k = 1, count do
      local next_byte = text:byte(i + k)
      if next_byte == nil then
        return false
      end
      -- Only the first continuation byte has the narrowed range.
      local lo, hi = 0x80, 0xBF
      if k == 1 then lo, hi = low, high end
      if next_byte < lo or next_byte > hi then
        return false
      end
    end
    i = i + count + 1
  end
  return true
end

-- Fetched afresh each time: a stream-info object taken before handle:body() is dead after it.
local function record(handle, key, value)
  handle:streamInfo():dynamicMetadata():set(NAMESPACE, key, value)
end

local function percent_decoded(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Whether the path (query excluded) has a `.` or `..` segment, also spelled %2E.
local function has_dot_segment(path)
  local path_only = path:match("^[^?]*")
  for segment in path_only:gmatch("[^/]+") do
    local dots = segment:lower():gsub("%%2e", ".")
    if dots == "." or dots == ".." then
      return true
    end
  end
  return false
end

-- REST bodies above this are refused with 413 (the transcoder's own limit is on its
-- internal buffer, and a long JSON string passes it). Equal to max_request_body_size in
-- envoy/gateway.yaml.in; a test keeps the two in step.
local MAX_REQUEST_BODY_BYTES = 1048576

-- 413 for a body over the limit. A declared length is checked without buffering (over
-- HTTP/2 a buffering filter is capped by the 64 KiB stream window). A body of unknown
-- length is buffered, and Envoy itself answers 413 when it outgrows the stream's buffer.
local function check_body_size(handle, headers)
  local length = headers:get("content-length")
  if length ~= nil then
    if (tonumber(length) or 0) > MAX_REQUEST_BODY_BYTES then
      handle:respond({[":status"] = "413"},
        "the request body is larger than " .. MAX_REQUEST_BODY_BYTES .. " bytes")
    end
  elseif headers:get("transfer-encoding") ~= nil or headers:get(":method") ~= "GET" then
    handle:body(true)
  end
end

-- Request bodies are JSON (the transcoder parses any body as JSON, whatever its type): a
-- body declared as something else is not parsed but refused. With 400, not 415: the O2ims
-- conformance tests (CONF 7.3.11) require 400 for an XML body. Returns true when it answered.
local BODY_METHODS = {POST = true, PUT = true, PATCH = true}
local function route_has_method(handle, method)
  local methods = handle:metadata():get("methods")
  if methods == nil then
    return false
  end
  for _, name in pairs(methods) do
    if name == method then
      return true
    end
  end
  return false
end
local function refuse_non_json_body(handle, headers)
  if not BODY_METHODS[headers:get(":method") or ""] then
    return false
  end
  local content_type = (headers:get("content-type") or ""):lower()
  local media_type = content_type:match("^%s*([^;%s]*)") or ""
  -- No content-length: a chunked (HTTP/1.1) or streamed (HTTP/2) body may follow.
  local length = headers:get("content-length")
  local has_body = length == nil or (tonumber(length) or 1) > 0
  if media_type == "application/json" or media_type:match("^application/[%w.%-]+%+json$") then
    return false
  end
  if media_type == "" and not has_body then
    if headers:get(":method") ~= "POST" and route_has_method(handle, headers:get(":method")) then
      -- PUT and PATCH replace or change a resource: without a body they say nothing, and
      -- the transcoder would pass an empty message on as "change nothing" or "clear all".
      handle:respond({[":status"] = "400"}, "this request needs a JSON body")
      return true
    end
    return false
  end
  handle:respond({[":status"] = "400", ["accept-post"] = "application/json"},
    "the request body must be JSON (Content-Type: application/json), not '" ..
    (media_type ~= "" and media_type or "none") .. "'")
  return true
end

-- A PUT or PATCH with an empty body, or a body of JSON `null`: the transcoder would read it as an empty message
-- ("change nothing" or "clear all"), and a merge patch of null would delete the resource,
-- which no O2ims resource allows. A 400. Only short bodies are looked at (buffered: the
-- last request step, as `headers` is out of scope after handle:body()).
local function refuse_null_body(handle, headers)
  local method = headers:get(":method")
  local length = tonumber(headers:get("content-length") or "")
  if (method ~= "PUT" and method ~= "PATCH") or length == nil or length > 16
      or not route_has_method(handle, method) then
    return
  end
  if length == 0 then
    handle:respond({[":status"] = "400"}, "this request needs a JSON body")
    return
  end
  local body = handle:body()
  if body ~= nil and body:getBytes(0, body:length()):match("^%s*null%s*$") then
    handle:respond({[":status"] = "400"}, "the request body must be a JSON object, not null")
  end
end

-- `?all_fields` (or `?all_fields=`) -> `?all_fields=true` for the boolean flags of this path (the route's
-- metadata lists them): O2ims sends such flags bare, and the transcoder would ignore a
-- query parameter without a value.
local function complete_flags(handle, headers, path)
  -- The query first: reading the route's metadata builds a Lua table of it.
  local base, query = path:match("^([^?]*)%?(.*)$")
  if query == nil or query == "" then
    return
  end
  local flags = handle:metadata():get("flags")
  if flags == nil then
    return
  end
  local is_flag = {}
  for _, name in pairs(flags) do
    is_flag[name] = true
  end
  local parts, changed = {}, false
  for part in query:gmatch("[^&]+") do
    -- `all_fields=` too: form encoders write an empty value that way.
    local name = part:match("^(.-)=?$")
    if is_flag[name] then
      part = name .. "=true"
      changed = true
    end
    parts[#parts + 1] = part
  end
  if changed then
    headers:replace(":path", base .. "?" .. table.concat(parts, "&"))
  end
end

-- The query parameters of `path` this path does not accept: `path` without them, and their
-- (percent-decoded, shortened) names. The route's metadata lists the accepted names,
-- derived from the request message (fields the path and body do not bind). Dropping them
-- here, before the transcoder, matters: it would bind a parameter named like a path field.
local IGNORED_QUERY_HEADER = "x-netweave-ignored-query"
local function split_unknown_query(handle, path)
  local base, query = path:match("^([^?]*)%?(.*)$")
  if query == nil or query == "" then
    return path, {}
  end
  local accepted = handle:metadata():get("query")
  if accepted == nil then
    return path, {}
  end
  local ok = {}
  for _, name in pairs(accepted) do
    ok[name] = true
  end
  local kept, dropped = {}, {}
  for part in query:gmatch("[^&]+") do
    local raw = part:match("^([^=]*)") or ""
    local name = percent_decoded((raw:gsub("%+", " ")))
    if ok[name] then
      kept[#kept + 1] = part
    else
      dropped[#dropped + 1] = name:sub(1, 64)
    end
  end
  if #dropped == 0 then
    return path, dropped
  end
  if #kept == 0 then
    return base, dropped
  end
  return base .. "?" .. table.concat(kept, "&"), dropped
end

-- `path` with its nextpage_opaque_marker replaced by `marker` (the next page's URL).
local function next_page_path(path, marker)
  local base, query = path:match("^([^?]*)%?(.*)$")
  base = base or path
  local kept = {}
  for part in (query or ""):gmatch("[^&]+") do
    if part:match("^([^=]*)") ~= "nextpage_opaque_marker" then
      kept[#kept + 1] = part
    end
  end
  -- The marker is base64url: safe in a query string as it is.
  kept[#kept + 1] = "nextpage_opaque_marker=" .. marker
  return base .. "?" .. table.concat(kept, "&")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if starts_with(content_type, "application/grpc") then
    return
  end
  record(handle, "rest", "1")
  local path = headers:get(":path") or ""
  -- For the Link header of a paged list: the next page is this URL with a new marker.
  record(handle, "path", path)
  -- Both become a ProblemDetails through local_reply_config, like every local reply.
  -- Only a path with a byte above 0x7F or a percent escape can decode to invalid UTF-8,
  -- and only one with a '.' or a '%' can hold a dot segment: most paths need neither walk.
  local plain = path:find("[%%\128-\255]") == nil
  if not plain and not valid_utf8(percent_decoded(path)) then
    handle:respond({[":status"] = "400"},
      "the request path or query is not valid UTF-8 once percent-decoded")
  elseif (not plain or path:find(".", 1, true) ~= nil) and has_dot_segment(path) then
    -- Envoy does not resolve them (normalize_path is off, see the template): an id of
    -- "." or ".." is never valid, and guessing what the client meant is worse.
    handle:respond({[":status"] = "400"}, "the request path has a '.' or '..' segment")
  else
    local cleaned, dropped = split_unknown_query(handle, path)
    if #dropped > 0 then
      -- Liberal in what it accepts (conformance tools and SMOs send extra parameters):
      -- an unknown parameter is ignored and counted by the core; NETWEAVE_STRICT_QUERY
      -- (set when Envoy's config is rendered strict) keeps refusing it.
      if NETWEAVE_STRICT_QUERY then
        handle:respond({[":status"] = "400"}, "unknown query parameter '" .. dropped[1] ..
          "': this path accepts only the O2ims query parameters")
        return
      end
      path = cleaned
      headers:replace(":path", path)
      headers:replace(IGNORED_QUERY_HEADER, tostring(#dropped))
      record(handle, "path", path)
      record(handle, "ignored_query", table.concat(dropped, ","))
    end
    if refuse_non_json_body(handle, headers) then
      return
    end
    complete_flags(handle, headers, path)
    check_body_size(handle, headers)
    refuse_null_body(handle, headers)
  end
end

-- FAILED_PRECONDITION means "the stored state refuses this"; the transcoder makes every
-- one a 400. These ErrorInfo reasons of the core (server/monitoring_v1.py) are conflicts
-- (409) or a failed If-Match (412) in HTTP terms.
local PRECONDITION_STATUSES = {
  ETAG_MISMATCH = 412,
  ALARM_ALREADY_ACKNOWLEDGED = 409,
  ALARM_ALREADY_CLEARED = 409,
  ALARM_NOT_MANUALLY_CLEARABLE = 409,
  ALARM_CHANGING = 409,
}

-- How to present an upstream (core) error: HTTP status, title, and a fixed detail (nil:
-- the core's own message is the detail).
local function upstream_problem(status, grpc_status, grpc_message, reason)
  grpc_message = grpc_message or ""
  if grpc_status == GRPC_FAILED_PRECONDITION and PRECONDITION_STATUSES[reason or ""] then
    local mapped = PRECONDITION_STATUSES[reason]
    return mapped, REASON_PHRASES[mapped], nil
  end
  if grpc_status == GRPC_UNIMPLEMENTED then
    -- The descriptor set publishes a method the core does not serve (an API version this
    -- deployment does not run): for O2ims that path does not exist.
    return 404, "Not Found", "no such resource: this gateway does not serve it"
  end
  if grpc_status == GRPC_RESOURCE_EXHAUSTED and grpc_message:find("metadata size", 1, true) then
    -- The core's gRPC library refused the request headers as too large: the client's
    -- request is too big, not rate limited.
    return 431, REASON_PHRASES[431], "the request headers (path and query included) are too large"
  end
  if grpc_status == GRPC_UNKNOWN then
    -- gRPC's answer to an unhandled exception in the core; its text is internal.
    return status, REASON_PHRASES[status] or "Error", "the gateway failed to process the request"
  end
  return status, REASON_PHRASES[status] or "Error", nil
end

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
  if metadata == nil or metadata["rest"] ~= "1" then
    return -- native gRPC: leave headers, body and trailers alone
  end
  local headers = handle:headers()
  local route = handle:metadata()

  -- For the access log: Envoy's own %GRPC_STATUS% is derived from the HTTP status once the
  -- transcoder has converted an error (NOT_FOUND would be logged as 12, UNIMPLEMENTED).
  local grpc_status = headers:get("grpc-status")
  if grpc_status ~= nil then
    record(handle, "grpc_status", grpc_status)
  end
  -- The core may name the collection itself; otherwise the route knows it from the proto.
  local collection = headers:get("x-o2ims-collection") or route:get("collection")
  local status_override = headers:get("x-o2ims-http-status") or headers:get("x-http-status")
  local next_marker = headers:get("x-o2ims-next-page-token")
  -- Collect first: removing while iterating the header map is undefined.
  local internal = {}
  for name, _ in pairs(headers) do
    if starts_with(name, "x-o2ims-") then
      internal[#internal + 1] = name
    end
  end
  for _, name in ipairs(internal) do
    headers:remove(name)
  end
  for _, name in ipairs(STRIPPED_HEADERS) do
    headers:remove(name)
  end

  local status = tonumber(headers:get(":status")) or 0
  local content_type = headers:get("content-type") or ""

  -- Only a plain success may be promoted (201 Created, 202 Accepted...): an error or a
  -- status Envoy chose must never be masked by what the core asked for.
  if status == 200 and status_override ~= nil and status_override:match("^2%d%d$") then
    status = tonumber(status_override)
    headers:replace(":status", status_override)
  end

  -- `headers` is only usable until handle:body(): after it, touching it raises "object
  -- used outside of proper scope" (a fresh handle:headers() still works: the headers are
  -- held back until the buffered body is complete). Envoy updates content-length itself
  -- when setBytes() changes the body.
  if status >= 200 and status < 300 and next_marker ~= nil and next_marker ~= "" then
    -- SOL013 paging: the client follows rel="next" until it is absent.
    headers:add("link", "<" .. next_page_path(metadata["path"] or "", next_marker) ..
      '>; rel="next"')
  end
  if status >= 200 and status < 300 then
    if route:get("empty") == true or status == 204 then
      headers:remove("content-type")
      local body = handle:body(true)
      if body ~= nil then
        body:setBytes("")
      end
    elseif collection ~= nil then
      headers:replace("content-type", "application/json")
      local body = handle:body(true)
      local text = body:getBytes(0, body:length())
      local token = raw_json_string(text, "nextPageToken")
      if token ~= nil and token ~= "" then
        -- Kept for the paging step (Link: rel="next"); never part of the O2ims body.
        record(handle, "next_page_token", token)
      end
      body:setBytes(bare_array(text, collection))
    elseif content_type == "" or starts_with(content_type, "application/grpc") then
      headers:replace("content-type", "application/json")
    end
  elseif status >= 400 and starts_with(content_type, "application/json") then
    -- With convert_grpc_status the transcoder's JSON error body is a google.rpc.Status
    -- {"code":N,"message":"...","details":[...]}. (Envoy's own replies are not JSON here:
    -- local_reply_config has already made them application/problem+json.) An error is a
    -- trailers-only gRPC response, so its code is only in that body.
    headers:replace("content-type", "application/problem+json")
    local body = handle:body(true)
    local text = body:getBytes(0, body:length())
    local code = text:match('"code":(%d+)')
    if code ~= nil then
      record(handle, "grpc_status", code)
    end
    local message = raw_json_string(text, "message")
    -- The first ErrorInfo's reason (the core puts ErrorInfo first in the details).
    local reason = raw_json_string(text, "reason")
    local problem_status, title, fixed_detail = upstream_problem(status, code, message, reason)
    if problem_status ~= status then
      -- A fresh header handle: the one taken before body() is out of scope by now, but
      -- the headers themselves are held back until the body is complete.
      handle:headers():replace(":status", tostring(problem_status))
    end
    if problem_status == 401 then
      -- The core refused a caller with neither certificate nor token (RFC 7235: a 401
      -- names the scheme to use).
      handle:headers():replace("www-authenticate", 'Bearer realm="o2ims"')
    end
    local detail = fixed_detail or message
    if detail == nil or detail == "" then
      detail = title
    end
    body:setBytes('{"status":' .. problem_status .. ',"title":"' .. title .. '","detail":"'
      .. detail .. '"}')
  end
end
