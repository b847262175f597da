/*
 * netweave source limit: an Envoy network filter (dynamic module) that caps the open
 * connections of each client source address.
 *
 * Why: Envoy 1.40 caps connections globally (overload manager) and per filter chain
 * (connection_limit), not per client; its connection_limit_per_client filter comes in a
 * later release. Without a per-source cap, one host can hold the whole global cap with idle
 * connections that never start TLS and lock every other client out.
 *
 * How: the filter runs first in the listener's filter chain, when Envoy has accepted a
 * connection and BEFORE the TLS handshake. It counts the open connections of each source and
 * closes a connection at once when its source already has `max` open. A source is an IPv4
 * address, or the /64 prefix of an IPv6 address (one host commonly owns a whole /64).
 * Counts are shared by all worker threads (one mutex; one lookup per connection open and
 * close). Refusals are counted in Envoy's statistics:
 * dynamic_module_network_filter.source_limit_refused (see docs/operations.md).
 *
 * Configuration (rest_facade/envoy_config.py renders it): filter_name "source_limit",
 * filter_config a google.protobuf.StringValue holding `max` in decimal (1..1000000).
 *
 * ABI: Envoy's dynamic-module ABI (source/extensions/dynamic_modules/abi/abi.h). Only the
 * symbols below are used, declared here with their Envoy 1.40 signatures; Envoy resolves
 * them when it loads the module, and rest_facade/envoy_modules.py builds it with `cc`.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* EXPORT, and envoy_dynamic_module_on_program_init reporting the ABI version. */
#include "abi_version.h"

/* --- the slice of the ABI this filter uses --------------------------------------------- */

typedef struct {
  const char* ptr;
  size_t length;
} envoy_buffer;

enum { STATUS_CONTINUE = 0, STATUS_STOP_ITERATION = 1 };
enum { CLOSE_NO_FLUSH = 1 };
enum { METRICS_SUCCESS = 0 };

extern bool envoy_dynamic_module_callback_network_filter_get_remote_address(
    void* filter_envoy, envoy_buffer* address_out, uint32_t* port_out);
extern void envoy_dynamic_module_callback_network_filter_close(void* filter_envoy,
                                                               int close_type);
extern int envoy_dynamic_module_callback_network_filter_config_define_counter(
    void* config_envoy, envoy_buffer name, size_t* counter_id_out);
extern int envoy_dynamic_module_callback_network_filter_increment_counter(void* filter_envoy,
                                                                          size_t counter_id,
                                                                          uint64_t value);

/* --- state ------------------------------------------------------------------------------ */

#define FILTER_NAME "source_limit"
#define MAX_LIMIT 1000000UL
/* Family byte, then the IPv4 address or the IPv6 /64 prefix. */
#define KEY_BYTES 9
#define BUCKETS 4096

typedef struct source {
  struct source* next;
  uint8_t key[KEY_BYTES];
  uint32_t open;
} source;

typedef struct {
  pthread_mutex_t lock;
  uint32_t max;
  size_t refused_counter; /* 0: no statistics */
  source* buckets[BUCKETS];
} limiter;

typedef struct {
  limiter* limiter;
  source* counted; /* NULL: this connection is not counted (not IP, or refused) */
} connection;

static uint32_t bucket_of(const uint8_t key[KEY_BYTES]) {
  uint32_t hash = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < KEY_BYTES; i++) {
    hash = (hash ^ key[i]) * 16777619u;
  }
  return hash % BUCKETS;
}

/* The source key of an address as Envoy prints it; false if it is not an IP address. */
static bool source_key(envoy_buffer address, uint8_t key[KEY_BYTES]) {
  char text[64];
  if (address.ptr == NULL || address.length == 0 || address.length >= sizeof text) {
    return false;
  }
  memcpy(text, address.ptr, address.length);
  text[address.length] = '\0';
  char* zone = strchr(text, '%'); /* fe80::1%eth0 */
  if (zone != NULL) {
    *zone = '\0';
  }
  memset(key, 0, KEY_BYTES);
  uint8_t raw[16];
  if (inet_pton(AF_INET, text, raw) == 1) {
    key[0] = 4;
    memcpy(key + 1, raw, 4);
    return true;
  }
  if (inet_pton(AF_INET6, text, raw) != 1) {
    return false;
  }
  static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(raw, v4_mapped, sizeof v4_mapped) == 0) {
    key[0] = 4;
    memcpy(key + 1, raw + 12, 4);
  } else {
    key[0] = 6;
    memcpy(key + 1, raw, 8);
  }
  return true;
}

/* --- module and filter configuration ---------------------------------------------------- */

EXPORT void* envoy_dynamic_module_on_network_filter_config_new(void* config_envoy,
                                                               envoy_buffer name,
                                                               envoy_buffer config) {
  if (name.length != strlen(FILTER_NAME) || memcmp(name.ptr, FILTER_NAME, name.length) != 0) {
    return NULL;
  }
  char digits[16];
  if (config.ptr == NULL || config.length == 0 || config.length >= sizeof digits) {
    return NULL;
  }
  memcpy(digits, config.ptr, config.length);
  digits[config.length] = '\0';
  unsigned long max = 0;
  for (size_t i = 0; i < config.length; i++) {
    if (digits[i] < '0' || digits[i] > '9') {
      return NULL;
    }
    max = max * 10 + (unsigned long)(digits[i] - '0');
  }
  if (max < 1 || max > MAX_LIMIT) {
    return NULL; /* Envoy rejects the configuration */
  }
  limiter* state = calloc(1, sizeof *state);
  if (state == NULL) {
    return NULL;
  }
  pthread_mutex_init(&state->lock, NULL);
  state->max = (uint32_t)max;
  static const char counter[] = "source_limit_refused";
  envoy_buffer counter_name = {counter, sizeof counter - 1};
  size_t id = 0;
  if (envoy_dynamic_module_callback_network_filter_config_define_counter(
          config_envoy, counter_name, &id) == METRICS_SUCCESS) {
    state->refused_counter = id;
  }
  return state;
}

EXPORT void envoy_dynamic_module_on_network_filter_config_destroy(void* config) {
  limiter* state = config;
  for (size_t i = 0; i < BUCKETS; i++) {
    for (source* node = state->buckets[i]; node != NULL;) {
      source* next = node->next;
      free(node);
      node = next;
    }
  }
  pthread_mutex_destroy(&state->lock);
  free(state);
}

/* --- per connection --------------------------------------------------------------------- */

EXPORT void* envoy_dynamic_module_on_network_filter_new(void* config, void* filter_envoy) {
  (void)filter_envoy;
  connection* conn = calloc(1, sizeof *conn);
  if (conn != NULL) {
    conn->limiter = config;
  }
  return conn; /* NULL: Envoy closes the connection */
}

EXPORT int envoy_dynamic_module_on_network_filter_new_connection(void* filter_envoy,
                                                                 void* filter) {
  connection* conn = filter;
  limiter* state = conn->limiter;
  envoy_buffer address = {NULL, 0};
  uint32_t port = 0;
  uint8_t key[KEY_BYTES];
  if (!envoy_dynamic_module_callback_network_filter_get_remote_address(filter_envoy, &address,
                                                                       &port) ||
      !source_key(address, key)) {
    return STATUS_CONTINUE; /* not an IP peer (a Unix socket): nothing to count */
  }
  uint32_t bucket = bucket_of(key);
  pthread_mutex_lock(&state->lock);
  source* node = state->buckets[bucket];
  while (node != NULL && memcmp(node->key, key, KEY_BYTES) != 0) {
    node = node->next;
  }
  if (node != NULL && node->open >= state->max) {
    pthread_mutex_unlock(&state->lock);
    if (state->refused_counter != 0) {
      envoy_dynamic_module_callback_network_filter_increment_counter(filter_envoy,
                                                                     state->refused_counter, 1);
    }
    envoy_dynamic_module_callback_network_filter_close(filter_envoy, CLOSE_NO_FLUSH);
    return STATUS_STOP_ITERATION;
  }
  if (node == NULL) {
    node = calloc(1, sizeof *node);
    if (node == NULL) {
      pthread_mutex_unlock(&state->lock);
      return STATUS_CONTINUE; /* out of memory: the global cap still applies */
    }
    memcpy(node->key, key, KEY_BYTES);
    node->next = state->buckets[bucket];
    state->buckets[bucket] = node;
  }
  node->open++;
  conn->counted = node;
  pthread_mutex_unlock(&state->lock);
  return STATUS_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_network_filter_read(void* filter_envoy, void* filter,
                                                       size_t length, bool end_stream) {
  (void)filter_envoy, (void)filter, (void)length, (void)end_stream;
  return STATUS_CONTINUE;
}

EXPORT int envoy_dynamic_module_on_network_filter_write(void* filter_envoy, void* filter,
                                                        size_t length, bool end_stream) {
  (void)filter_envoy, (void)filter, (void)length, (void)end_stream;
  return STATUS_CONTINUE;
}

EXPORT void envoy_dynamic_module_on_network_filter_event(void* filter_envoy, void* filter,
                                                         int event) {
  (void)filter_envoy, (void)filter, (void)event;
}

/* Envoy destroys the filter with its connection: the one place a count is given back. */
EXPORT void envoy_dynamic_module_on_network_filter_destroy(void* filter) {
  connection* conn = filter;
  source* node = conn->counted;
  if (node != NULL) {
    limiter* state = conn->limiter;
    pthread_mutex_lock(&state->lock);
    if (--node->open == 0) {
      source** link = &state->buckets[bucket_of(node->key)];
      while (*link != node) {
        link = &(*link)->next;
      }
      *link = node->next;
      free(node);
    }
    pthread_mutex_unlock(&state->lock);
  }
  free(conn);
}
