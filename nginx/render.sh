#!/bin/sh
# Render nginx/wharf.conf.template for one environment and print it on stdout.
#
#   nginx/render.sh > /etc/nginx/conf.d/wharf.conf          # EC2 host defaults
#   WHARF_LB_CIDR=10.20.0.0/16 nginx/render.sh > ...        # your VPC / ELB subnets
#
# Only these variables differ between environments (defaults = EC2 host layout):
#   WHARF_UPSTREAM   127.0.0.1:8000   the web container published on the host
#   WHARF_LB_CIDR    10.0.0.0/8       where the ELB's nodes live (trusted X-Forwarded-*)
#   WHARF_HTTP_PORT  80               ELB HTTP listener -> here
#   WHARF_HTTPS_PORT 443              ELB HTTPS listener (TLS ended at the ELB) -> here, plain HTTP
#   WHARF_ACCESS_LOG /var/log/nginx/wharf.access.json
# Only ${WHARF_*} placeholders are substituted; nginx's own $variables are kept.
# The official nginx image renders /etc/nginx/templates/*.template the same way
# at start-up (docker-compose.yml relies on that).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${WHARF_UPSTREAM:=127.0.0.1:8000}"
: "${WHARF_LB_CIDR:=10.0.0.0/8}"
: "${WHARF_HTTP_PORT:=80}"
: "${WHARF_HTTPS_PORT:=443}"
: "${WHARF_ACCESS_LOG:=/var/log/nginx/wharf.access.json}"
export WHARF_UPSTREAM WHARF_LB_CIDR WHARF_HTTP_PORT WHARF_HTTPS_PORT WHARF_ACCESS_LOG
if [ "$WHARF_HTTP_PORT" = "$WHARF_HTTPS_PORT" ]; then
    echo "render.sh: WHARF_HTTP_PORT and WHARF_HTTPS_PORT must differ" >&2
    exit 2
fi
exec envsubst '${WHARF_UPSTREAM} ${WHARF_LB_CIDR} ${WHARF_HTTP_PORT} ${WHARF_HTTPS_PORT} ${WHARF_ACCESS_LOG}' \
    < "${1:-$here/wharf.conf.template}"
