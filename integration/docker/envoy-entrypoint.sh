#!/bin/sh
# Entrypoint of the compose `envoy` service (envoyproxy/envoy image, POSIX sh).
#
#   envoy-entrypoint.sh [envoy args...]  writes the ECDS resource, then execs Envoy
#   envoy-entrypoint.sh reload           rewrites it; the running Envoy picks it up
#                                        (docker compose exec envoy sh /etc/llmgate/envoy-entrypoint.sh reload)
#
# The ECDS resource wraps the plugin configuration mounted at
# $LLMGATE_PLUGIN_CONFIG (examples/demo.json by default) in the same
# TypedExtensionConfig the native stack writes (integration/src/lib.rs,
# ecds_resource): the JSON file becomes a JSON string, so no copy of the
# plugin configuration lives in envoy.yaml.
set -eu

CONFIG="${LLMGATE_PLUGIN_CONFIG:-/etc/llmgate/plugin.json}"
WASM="${LLMGATE_WASM:-/etc/llmgate/llmgate.wasm}"
ECDS_DIR="${LLMGATE_ECDS_DIR:-/etc/llmgate/ecds}"
BOOTSTRAP="${ENVOY_BOOTSTRAP:-/etc/envoy/envoy.yaml}"

# The file's text as the body of a JSON string: valid JSON has no raw control
# characters except whitespace, so escaping \ " TAB CR and joining lines with
# \n is complete.
json_string_body() {
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' "$1" |
    awk '{ printf "%s%s", (NR > 1 ? "\\n" : ""), $0 }'
}

write_ecds() {
  if [ ! -f "$CONFIG" ]; then
    echo "llmgate: plugin configuration $CONFIG not found (is the file mounted?)" >&2
    exit 1
  fi
  if [ ! -f "$WASM" ]; then
    echo "llmgate: $WASM not found: build it first (make wasm)" >&2
    exit 1
  fi
  mkdir -p "$ECDS_DIR"
  tmp="$ECDS_DIR/.llmgate.json.tmp"
  {
    printf '%s' '{"resources":[{"@type":"type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig","name":"llmgate","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm","config":{"name":"llmgate","root_id":"llmgate","vm_config":{"vm_id":"llmgate","runtime":"envoy.wasm.runtime.v8","code":{"local":{"filename":"'
    printf '%s' "$WASM"
    printf '%s' '"}},"environment_variables":{"host_env_keys":["LLMGATE_OPENAI_API_KEY","LLMGATE_ANTHROPIC_API_KEY"]}},"configuration":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"'
    json_string_body "$CONFIG"
    printf '%s\n' '"},"allow_on_headers_stop_iteration":true,"failure_policy":"FAIL_RELOAD"}}}]}'
  } > "$tmp"
  # Envoy watches the directory for a rename onto the file (atomic swap).
  mv -f "$tmp" "$ECDS_DIR/llmgate.json"
}

if [ "${1:-}" = "reload" ]; then
  write_ecds
  echo "llmgate configuration reloaded from $CONFIG"
  exit 0
fi

write_ecds
mkdir -p "${LLMGATE_AUDIT_DIR:-/var/log/llmgate}"
exec envoy -c "$BOOTSTRAP" "$@"
