/*
 * A test harness for the Envoy HTTP filters in envoy/modules (shaper.c, request_context.c),
 * built by tests/rest_facade/test_module_failures.py with -DHARNESS_SHAPER or
 * -DHARNESS_REQUEST_CONTEXT. It includes the filter's .c file (its static functions and hooks in
 * this translation unit) and defines every envoy_dynamic_module_callback_* the filters call as a
 * stub backed by in-memory headers, bodies and metadata, so the branches the real Envoy never
 * reaches can be driven: a callback that returns false, an allocation that fails (malloc,
 * calloc and realloc of the filter are the harness's, which fail the Nth one when asked).
 *
 * The scenario is a script on stdin, one command a line (a value is the rest of the line):
 *   config KEY=VALUE                 a line of the filter configuration
 *   header request|response|trailers NAME VALUE
 *   route_list KEY [ITEM ...]        route metadata (under any namespace), a string list
 *   route_string KEY VALUE           ... a string
 *   route_bool KEY true|false        ... a bool
 *   metadata KEY VALUE               dynamic metadata (under any namespace) already set
 *   body request|response TEXT       the buffered body (what Envoy hands the filter at its end)
 *   fail get_header NAME             that header's get_header returns false
 *   fail set_header NAME             setting or removing that header returns false
 *   fail get_headers request|response|trailers
 *   fail list_string KEY             get_metadata_list_string of that list returns false
 *   fail drain_body|append_body      drain_body or append_body (any body) returns false, the
 *                                    body left as it was
 *   fail alloc N                     the Nth allocation from here (1-based) fails, those after
 *                                    succeed
 *   new                              on_http_filter_config_new, then on_http_filter_new
 *   call HOOK [0|1]                  a hook (request_headers, request_body, request_trailers,
 *                                    response_headers, response_body, response_trailers) with
 *                                    end_of_stream
 * At the end it destroys the filter and its configuration and prints one JSON line: what each
 * hook returned, every send_response (status, body, details, headers), every header change,
 * the headers and bodies as they are at the end, the dynamic metadata set, and the allocation
 * count. The harness never checks anything itself: the test asserts on that line.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- allocations of the filter ------------------------------------------------------------ */

static long allocations;      /* counted from the last `fail alloc` (or the start) */
static long fail_allocation;  /* the one to fail (1-based), 0: none */
static long failed_allocations;

static bool allocation_fails(void) {
  allocations++;
  if (fail_allocation > 0 && allocations == fail_allocation) {
    failed_allocations++;
    return true;
  }
  return false;
}

/* (unused: a filter need not call all three) */
#define HARNESS_ALLOCATOR static __attribute__((unused)) void*

HARNESS_ALLOCATOR harness_malloc(size_t size) { return allocation_fails() ? NULL : malloc(size); }

HARNESS_ALLOCATOR harness_calloc(size_t count, size_t size) {
  return allocation_fails() ? NULL : calloc(count, size);
}

HARNESS_ALLOCATOR harness_realloc(void* old, size_t size) {
  return allocation_fails() ? NULL : realloc(old, size);
}

#define malloc harness_malloc
#define calloc harness_calloc
#define realloc harness_realloc

#if defined(HARNESS_SHAPER)
#include "shaper.c"
#elif defined(HARNESS_REQUEST_CONTEXT)
#include "request_context.c"
#else
#error "build with -DHARNESS_SHAPER or -DHARNESS_REQUEST_CONTEXT"
#endif

#undef malloc
#undef calloc
#undef realloc

/* --- the harness's own storage (never failing, never freed before exit) -------------------- */

/* From a static arena, so the leak checker (the test builds with -fsanitize=address) sees
 * only what the filter allocates. */
static char arena[1 << 22];
static size_t arena_used;

static char* copy_bytes(const char* data, size_t length) {
  if (length + 1 > sizeof arena - arena_used) {
    abort();
  }
  char* copy = arena + arena_used;
  arena_used += length + 1;
  if (data != NULL && length > 0) {
    memcpy(copy, data, length);
  }
  copy[length] = '\0';
  return copy;
}

typedef struct {
  char* data;
  size_t length;
} bytes;

/* A copy of `value`; of `value.length` bytes to fill when its ptr is NULL. */
static bytes bytes_of(buffer value) {
  if (value.ptr == NULL) {
    return (bytes){copy_bytes(NULL, value.length), value.length};
  }
  return (bytes){copy_bytes(value.ptr, value.length), value.length};
}

static bytes bytes_text(const char* text) { return bytes_of(text_of(text)); }

static bool bytes_equal(bytes a, buffer b) {
  return a.length == b.length && (a.length == 0 || memcmp(a.data, b.ptr, a.length) == 0);
}

#define MAX_ENTRIES 256

typedef struct {
  bytes key, value;
} entry;

typedef struct {
  entry items[MAX_ENTRIES];
  size_t count;
} entries;

static void entries_add(entries* list, bytes key, bytes value) {
  if (list->count == MAX_ENTRIES) {
    abort();
  }
  list->items[list->count++] = (entry){key, value};
}

/* Header maps by header_type (0 request, 2 response, 3 response trailers). */
static entries headers[4];
static bool fail_get_headers[4];
static entries fail_get_header; /* names only */
static entries fail_set_header;
static entries fail_list_string;
static bool fail_drain_body, fail_append_body;

typedef struct {
  bytes key;
  entries items; /* values in key */
} route_list_entry;

static route_list_entry route_lists[16];
static size_t route_list_count;
static entries route_strings_;
static entries route_bools;
static entries dynamic_metadata;

/* Bodies: BUFFERED_REQUEST_BODY and BUFFERED_RESPONSE_BODY; Envoy hands the filter the
 * buffered body at its end (received_buffered_*_body is true), so a received type reads it. */
static bytes bodies[4];

static int body_slot(int body_type) {
  return body_type == RECEIVED_REQUEST_BODY || body_type == BUFFERED_REQUEST_BODY
             ? BUFFERED_REQUEST_BODY
             : BUFFERED_RESPONSE_BODY;
}

/* What the filter did. */
typedef struct {
  uint32_t status;
  bytes body, details;
  entries headers;
} reply;

static reply replies[8];
static size_t reply_count;
static entries header_changes; /* "set <type> <name>" or "remove <type> <name>" -> value */
static entries hook_results;   /* hook -> its return value */

static bool named(const entries* list, buffer name) {
  for (size_t i = 0; i < list->count; i++) {
    if (bytes_equal(list->items[i].key, name)) {
      return true;
    }
  }
  return false;
}

/* --- the callbacks (Envoy's side) ------------------------------------------------------------ */

bool envoy_dynamic_module_callback_http_get_header(void* filter_envoy, int header_type,
                                                   buffer key, buffer* value_out, size_t index,
                                                   size_t* count_out) {
  (void)filter_envoy;
  if (header_type == REQUEST_HEADERS && named(&fail_get_header, key)) {
    return false;
  }
  const entries* list = &headers[header_type];
  size_t count = 0;
  bool found = false;
  for (size_t i = 0; i < list->count; i++) {
    if (bytes_equal(list->items[i].key, key)) {
      if (count == index) {
        *value_out = (buffer){list->items[i].value.data, list->items[i].value.length};
        found = true;
      }
      count++;
    }
  }
  if (count_out != NULL) {
    *count_out = count;
  }
  return found;
}

size_t envoy_dynamic_module_callback_http_get_headers_size(void* filter_envoy, int header_type) {
  (void)filter_envoy;
  return headers[header_type].count;
}

bool envoy_dynamic_module_callback_http_get_headers(void* filter_envoy, int header_type,
                                                    http_header* headers_out) {
  (void)filter_envoy;
  if (fail_get_headers[header_type]) {
    return false;
  }
  const entries* list = &headers[header_type];
  for (size_t i = 0; i < list->count; i++) {
    headers_out[i] = (http_header){list->items[i].key.data, list->items[i].key.length,
                                   list->items[i].value.data, list->items[i].value.length};
  }
  return true;
}

static const char* type_name(int header_type) {
  return header_type == REQUEST_HEADERS    ? "request"
         : header_type == RESPONSE_HEADERS ? "response"
                                           : "trailers";
}

static void note_change(const char* what, int header_type, buffer key, buffer value) {
  char label[512];
  int length = snprintf(label, sizeof label, "%s %s %.*s", what, type_name(header_type),
                        (int)key.length, key.ptr);
  entries_add(&header_changes, bytes_of((buffer){label, (size_t)length}), bytes_of(value));
}

bool envoy_dynamic_module_callback_http_set_header(void* filter_envoy, int header_type,
                                                   buffer key, buffer value) {
  (void)filter_envoy;
  if (named(&fail_set_header, key)) {
    note_change(value.ptr == NULL ? "failed remove" : "failed set", header_type, key, value);
    return false;
  }
  entries* list = &headers[header_type];
  size_t kept = 0;
  for (size_t i = 0; i < list->count; i++) {
    if (!bytes_equal(list->items[i].key, key)) {
      list->items[kept++] = list->items[i];
    }
  }
  list->count = kept;
  if (value.ptr != NULL) {
    entries_add(list, bytes_of(key), bytes_of(value));
  }
  note_change(value.ptr == NULL ? "remove" : "set", header_type, key, value);
  return true;
}

bool envoy_dynamic_module_callback_http_add_header(void* filter_envoy, int header_type,
                                                   buffer key, buffer value) {
  (void)filter_envoy;
  if (named(&fail_set_header, key)) {
    note_change("failed add", header_type, key, value);
    return false;
  }
  entries_add(&headers[header_type], bytes_of(key), bytes_of(value));
  note_change("add", header_type, key, value);
  return true;
}

void envoy_dynamic_module_callback_http_send_response(void* filter_envoy, uint32_t status_code,
                                                      http_header* reply_headers,
                                                      size_t headers_count, buffer body,
                                                      buffer details) {
  (void)filter_envoy;
  if (reply_count == sizeof replies / sizeof replies[0]) {
    abort();
  }
  reply* sent = &replies[reply_count++];
  sent->status = status_code;
  sent->body = bytes_of(body);
  sent->details = bytes_of(details);
  for (size_t i = 0; i < headers_count; i++) {
    entries_add(&sent->headers,
                bytes_of((buffer){reply_headers[i].key_ptr, reply_headers[i].key_length}),
                bytes_of((buffer){reply_headers[i].value_ptr, reply_headers[i].value_length}));
  }
}

size_t envoy_dynamic_module_callback_http_get_body_chunks_size(void* filter_envoy,
                                                               int body_type) {
  (void)filter_envoy;
  return bodies[body_slot(body_type)].length > 0 ? 1 : 0;
}

bool envoy_dynamic_module_callback_http_get_body_chunks(void* filter_envoy, int body_type,
                                                        buffer* chunks_out) {
  (void)filter_envoy;
  bytes* body = &bodies[body_slot(body_type)];
  if (body->length > 0) {
    chunks_out[0] = (buffer){body->data, body->length};
  }
  return true;
}

size_t envoy_dynamic_module_callback_http_get_body_size(void* filter_envoy, int body_type) {
  (void)filter_envoy;
  return bodies[body_slot(body_type)].length;
}

bool envoy_dynamic_module_callback_http_append_body(void* filter_envoy, int body_type,
                                                    buffer data) {
  (void)filter_envoy;
  if (fail_append_body) {
    return false;
  }
  bytes* body = &bodies[body_slot(body_type)];
  bytes joined = bytes_of((buffer){NULL, body->length + data.length});
  if (body->length > 0) memcpy(joined.data, body->data, body->length);
  if (data.length > 0) memcpy(joined.data + body->length, data.ptr, data.length);
  *body = joined;
  return true;
}

bool envoy_dynamic_module_callback_http_drain_body(void* filter_envoy, int body_type,
                                                   size_t length) {
  (void)filter_envoy;
  if (fail_drain_body) {
    return false;
  }
  bytes* body = &bodies[body_slot(body_type)];
  if (length > body->length) {
    length = body->length;
  }
  *body = bytes_of((buffer){body->data + length, body->length - length});
  return true;
}

bool envoy_dynamic_module_callback_http_received_buffered_request_body(void* filter_envoy) {
  (void)filter_envoy;
  return true;
}

bool envoy_dynamic_module_callback_http_received_buffered_response_body(void* filter_envoy) {
  (void)filter_envoy;
  return true;
}

static void set_metadata(buffer key, buffer value) {
  for (size_t i = 0; i < dynamic_metadata.count; i++) {
    if (bytes_equal(dynamic_metadata.items[i].key, key)) {
      dynamic_metadata.items[i].value = bytes_of(value);
      return;
    }
  }
  entries_add(&dynamic_metadata, bytes_of(key), bytes_of(value));
}

/* Dynamic metadata is kept by key alone: the scenarios never use one key in two namespaces. */
void envoy_dynamic_module_callback_http_set_dynamic_metadata_string(void* filter_envoy, buffer ns,
                                                                    buffer key, buffer value) {
  (void)filter_envoy, (void)ns;
  set_metadata(key, value);
}

void envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
    void* filter_envoy, buffer ns, const http_header* items, size_t count) {
  (void)filter_envoy, (void)ns;
  for (size_t i = 0; i < count; i++) {
    set_metadata((buffer){items[i].key_ptr, items[i].key_length},
                 (buffer){items[i].value_ptr, items[i].value_length});
  }
}

static bool lookup(const entries* list, buffer key, buffer* value_out) {
  for (size_t i = 0; i < list->count; i++) {
    if (bytes_equal(list->items[i].key, key)) {
      *value_out = (buffer){list->items[i].value.data, list->items[i].value.length};
      return true;
    }
  }
  return false;
}

bool envoy_dynamic_module_callback_http_get_metadata_string(void* filter_envoy, int source,
                                                            buffer ns, buffer key,
                                                            buffer* value_out) {
  (void)filter_envoy, (void)ns;
  return lookup(source == METADATA_ROUTE ? &route_strings_ : &dynamic_metadata, key, value_out);
}

bool envoy_dynamic_module_callback_http_get_metadata_bool(void* filter_envoy, int source,
                                                          buffer ns, buffer key,
                                                          bool* value_out) {
  (void)filter_envoy, (void)ns;
  buffer value;
  if (source != METADATA_ROUTE || !lookup(&route_bools, key, &value)) {
    return false;
  }
  *value_out = same(value, LITERAL("true"));
  return true;
}

static route_list_entry* find_route_list(buffer key) {
  for (size_t i = 0; i < route_list_count; i++) {
    if (bytes_equal(route_lists[i].key, key)) {
      return &route_lists[i];
    }
  }
  return NULL;
}

bool envoy_dynamic_module_callback_http_get_metadata_list_size(void* filter_envoy, int source,
                                                               buffer ns, buffer key,
                                                               size_t* size_out) {
  (void)filter_envoy, (void)ns;
  route_list_entry* list = source == METADATA_ROUTE ? find_route_list(key) : NULL;
  if (list == NULL) {
    return false;
  }
  *size_out = list->items.count;
  return true;
}

bool envoy_dynamic_module_callback_http_get_metadata_list_string(void* filter_envoy, int source,
                                                                 buffer ns, buffer key,
                                                                 size_t index,
                                                                 buffer* value_out) {
  (void)filter_envoy, (void)ns;
  route_list_entry* list = source == METADATA_ROUTE ? find_route_list(key) : NULL;
  if (list == NULL || index >= list->items.count || named(&fail_list_string, key)) {
    return false;
  }
  *value_out = (buffer){list->items.items[index].key.data, list->items.items[index].key.length};
  return true;
}

/* --- the script --------------------------------------------------------------------------- */

static void json_string(const char* data, size_t length) {
  putchar('"');
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c == '"' || c == '\\') {
      printf("\\%c", c);
    } else if (c < 0x20 || c >= 0x7f) {
      printf("\\u%04x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

static void json_bytes(bytes value) { json_string(value.data, value.length); }

/* A list of [key, value] pairs (order and repeats kept). */
static void json_entries(const entries* list) {
  putchar('[');
  for (size_t i = 0; i < list->count; i++) {
    printf(i ? ",[" : "[");
    json_bytes(list->items[i].key);
    putchar(',');
    json_bytes(list->items[i].value);
    putchar(']');
  }
  putchar(']');
}

static int header_type_of(const char* name) {
  if (strcmp(name, "request") == 0) return REQUEST_HEADERS;
  if (strcmp(name, "response") == 0) return RESPONSE_HEADERS;
  if (strcmp(name, "trailers") == 0) return RESPONSE_TRAILERS;
  fprintf(stderr, "unknown header map %s\n", name);
  exit(2);
}

/* The next space-separated word of *line (NULL at its end); *line moves past it. */
static char* word(char** line) {
  while (**line == ' ') (*line)++;
  if (**line == '\0') return NULL;
  char* start = *line;
  while (**line != ' ' && **line != '\0') (*line)++;
  if (**line == ' ') *(*line)++ = '\0';
  return start;
}

static char* required(char** line, const char* what) {
  char* value = word(line);
  if (value == NULL) {
    fprintf(stderr, "missing %s\n", what);
    exit(2);
  }
  return value;
}

static int call_hook(const char* hook, void* envoy, const void* filter, bool end_of_stream) {
  if (strcmp(hook, "request_headers") == 0)
    return envoy_dynamic_module_on_http_filter_request_headers(envoy, filter, end_of_stream);
  if (strcmp(hook, "request_body") == 0)
    return envoy_dynamic_module_on_http_filter_request_body(envoy, filter, end_of_stream);
  if (strcmp(hook, "request_trailers") == 0)
    return envoy_dynamic_module_on_http_filter_request_trailers(envoy, filter);
  if (strcmp(hook, "response_headers") == 0)
    return envoy_dynamic_module_on_http_filter_response_headers(envoy, filter, end_of_stream);
  if (strcmp(hook, "response_body") == 0)
    return envoy_dynamic_module_on_http_filter_response_body(envoy, filter, end_of_stream);
  if (strcmp(hook, "response_trailers") == 0)
    return envoy_dynamic_module_on_http_filter_response_trailers(envoy, filter);
  fprintf(stderr, "unknown hook %s\n", hook);
  exit(2);
}

int main(void) {
  static char line[65536];
  static char config_text[65536];
  size_t config_length = 0;
  int envoy_token = 0; /* the filter_envoy pointer the filter passes back */
  void* envoy = &envoy_token;
  const void* config = NULL;
  const void* filter = NULL;
  bool created = false;
  while (fgets(line, sizeof line, stdin) != NULL) {
    size_t length = strlen(line);
    if (length > 0 && line[length - 1] == '\n') line[--length] = '\0';
    char* rest = line;
    char* command = word(&rest);
    if (command == NULL) continue;
    if (strcmp(command, "config") == 0) {
      size_t add = strlen(rest);
      if (config_length + add + 1 >= sizeof config_text) abort();
      memcpy(config_text + config_length, rest, add);
      config_length += add;
      config_text[config_length++] = '\n';
    } else if (strcmp(command, "header") == 0) {
      int type = header_type_of(required(&rest, "header map"));
      char* name = required(&rest, "header name");
      entries_add(&headers[type], bytes_text(name), bytes_text(rest));
    } else if (strcmp(command, "route_list") == 0) {
      route_list_entry* list = &route_lists[route_list_count++];
      list->key = bytes_text(required(&rest, "list key"));
      for (char* item = word(&rest); item != NULL; item = word(&rest)) {
        entries_add(&list->items, bytes_text(item), bytes_text(""));
      }
    } else if (strcmp(command, "route_string") == 0) {
      char* key = required(&rest, "key");
      entries_add(&route_strings_, bytes_text(key), bytes_text(rest));
    } else if (strcmp(command, "route_bool") == 0) {
      char* key = required(&rest, "key");
      entries_add(&route_bools, bytes_text(key), bytes_text(rest));
    } else if (strcmp(command, "metadata") == 0) {
      char* key = required(&rest, "key");
      set_metadata(text_of(key), text_of(rest));
    } else if (strcmp(command, "body") == 0) {
      char* which = required(&rest, "request|response");
      bodies[strcmp(which, "request") == 0 ? BUFFERED_REQUEST_BODY : BUFFERED_RESPONSE_BODY] =
          bytes_text(rest);
    } else if (strcmp(command, "fail") == 0) {
      char* what = required(&rest, "what to fail");
      if (strcmp(what, "get_header") == 0) {
        entries_add(&fail_get_header, bytes_text(required(&rest, "name")), bytes_text(""));
      } else if (strcmp(what, "set_header") == 0) {
        entries_add(&fail_set_header, bytes_text(required(&rest, "name")), bytes_text(""));
      } else if (strcmp(what, "get_headers") == 0) {
        fail_get_headers[header_type_of(required(&rest, "header map"))] = true;
      } else if (strcmp(what, "list_string") == 0) {
        entries_add(&fail_list_string, bytes_text(required(&rest, "key")), bytes_text(""));
      } else if (strcmp(what, "drain_body") == 0) {
        fail_drain_body = true;
      } else if (strcmp(what, "append_body") == 0) {
        fail_append_body = true;
      } else if (strcmp(what, "alloc") == 0) {
        fail_allocation = atol(required(&rest, "N"));
        allocations = 0;
      } else {
        fprintf(stderr, "unknown failure %s\n", what);
        return 2;
      }
    } else if (strcmp(command, "new") == 0) {
      config = envoy_dynamic_module_on_http_filter_config_new(
          NULL, LITERAL(FILTER_NAME), (buffer){config_text, config_length});
      if (config == NULL) {
        fprintf(stderr, "the filter refused its configuration\n");
        return 2;
      }
      filter = envoy_dynamic_module_on_http_filter_new(config, envoy);
      created = true;
    } else if (strcmp(command, "call") == 0) {
      char* hook = required(&rest, "hook");
      char* end = word(&rest);
      if (!created) {
        fprintf(stderr, "call before new\n");
        return 2;
      }
      int result = call_hook(hook, envoy, filter, end != NULL && strcmp(end, "1") == 0);
      char digits[16];
      int digits_length = snprintf(digits, sizeof digits, "%d", result);
      entries_add(&hook_results, bytes_text(hook),
                  bytes_of((buffer){digits, (size_t)digits_length}));
    } else {
      fprintf(stderr, "unknown command %s\n", command);
      return 2;
    }
  }
  if (created) {
    envoy_dynamic_module_on_http_filter_destroy(filter);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
  }
  printf("{\"hooks\":");
  json_entries(&hook_results);
  printf(",\"replies\":[");
  for (size_t i = 0; i < reply_count; i++) {
    printf(i ? ",{\"status\":%u,\"body\":" : "{\"status\":%u,\"body\":", replies[i].status);
    json_bytes(replies[i].body);
    printf(",\"details\":");
    json_bytes(replies[i].details);
    printf(",\"headers\":");
    json_entries(&replies[i].headers);
    putchar('}');
  }
  printf("],\"header_changes\":");
  json_entries(&header_changes);
  printf(",\"request_headers\":");
  json_entries(&headers[REQUEST_HEADERS]);
  printf(",\"response_headers\":");
  json_entries(&headers[RESPONSE_HEADERS]);
  printf(",\"response_trailers\":");
  json_entries(&headers[RESPONSE_TRAILERS]);
  printf(",\"request_body\":");
  json_bytes(bodies[BUFFERED_REQUEST_BODY]);
  printf(",\"response_body\":");
  json_bytes(bodies[BUFFERED_RESPONSE_BODY]);
  printf(",\"dynamic_metadata\":");
  json_entries(&dynamic_metadata);
  printf(",\"allocations\":%ld,\"failed_allocations\":%ld}\n", allocations, failed_allocations);
  fflush(stdout);
  return 0;
}
