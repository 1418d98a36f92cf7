#!/usr/bin/env bash
# `make dashboards` / `make dashboards-down`: a Prometheus next to the demo
# stack (`make up`), scraping Envoy's admin port with examples/prometheus.yml
# (every 5 s) and evaluating examples/alerts.yml. Its pid is kept in
# .run/prometheus.pid; `dashboards-down` stops exactly that process.
#
# Grafana is not installed: neither Debian nor PyPI ship a Grafana server that
# runs offline here. Import examples/llmgate.dashboard.json into any Grafana
# with this Prometheus as its data source (README.md, "Dashboards").
set -euo pipefail

cd "$(dirname "$0")/.."
PROM_PORT="${PROM_PORT:-19090}"
RUN=.run
DIR="$RUN/prometheus"
PIDFILE="$RUN/prometheus.pid"

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "${1:-up}" in
up)
  if running; then
    echo "Prometheus already running (pid $(cat "$PIDFILE"))"
  else
    command -v prometheus >/dev/null || { echo "prometheus not found: run make deps" >&2; exit 1; }
    mkdir -p "$DIR"
    sed -e 's/scrape_interval: 15s/scrape_interval: 5s/' \
        -e 's/evaluation_interval: 15s/evaluation_interval: 5s/' \
        examples/prometheus.yml > "$DIR/prometheus.yml"
    printf '\nrule_files:\n  - %s\n' "$PWD/examples/alerts.yml" >> "$DIR/prometheus.yml"
    promtool check config "$DIR/prometheus.yml" >/dev/null
    nohup prometheus --config.file="$DIR/prometheus.yml" \
      --storage.tsdb.path="$DIR/data" \
      --web.listen-address="127.0.0.1:$PROM_PORT" \
      > "$RUN/prometheus.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; then break; fi
      if ! running; then echo "Prometheus exited, see $RUN/prometheus.log" >&2; exit 1; fi
      sleep 0.1
    done
  fi
  P="http://127.0.0.1:$PROM_PORT"
  cat <<EOF

Prometheus (pid $(cat "$PIDFILE")) scrapes the demo stack's Envoy every 5 s:
  targets     $P/targets
  alert rules $P/alerts        (examples/alerts.yml)
  a graph     $P/graph?g0.expr=sum%20by%20(outcome)%20(rate(llmgate_requests_total%5B1m%5D))&g0.tab=0&g0.range_input=15m
  GenAI p95   $P/graph?g0.expr=histogram_quantile(0.95%2C%20sum%20by%20(le%2C%20gen_ai_response_model)%20(rate(gen_ai_server_request_duration_milliseconds_bucket%5B1m%5D)))&g0.tab=0&g0.range_input=15m
Grafana: not installable offline here. Import examples/llmgate.dashboard.json into
your Grafana, with a Prometheus data source at $P.

Some traffic to fill it up:
  for i in \$(seq 1 200); do curl -s http://127.0.0.1:10000/v1/chat/completions \\
    -H 'authorization: Bearer sk-llmgate-demo' -H 'content-type: application/json' \\
    -d "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello \$i\"}]}" >/dev/null; sleep 0.2; done

Stop it with: make dashboards-down   (and the stack with: make down)
EOF
  ;;
down)
  if running; then
    pid="$(cat "$PIDFILE")"
    kill "$pid" && echo "stopped prometheus ($pid)"
  else
    echo "Prometheus not running"
  fi
  rm -f "$PIDFILE"
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
