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
#   WHARF_LOG_CLIENT_IP off         client address in the access log: off = none at all,
#                                   truncated = IPv4 /24 as a.b.c.0, IPv6 first three groups + ::
#                                   (after real_ip); any other value is refused (exit 2)
# The access log never holds a full client address, X-Forwarded-For or a query string.
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
: "${WHARF_LOG_CLIENT_IP:=off}"
export WHARF_UPSTREAM WHARF_LB_CIDR WHARF_HTTP_PORT WHARF_HTTPS_PORT WHARF_ACCESS_LOG WHARF_LOG_CLIENT_IP
if [ "$WHARF_HTTP_PORT" = "$WHARF_HTTPS_PORT" ]; then
    echo "render.sh: WHARF_HTTP_PORT and WHARF_HTTPS_PORT must differ" >&2
    exit 2
fi
case "$WHARF_LOG_CLIENT_IP" in
    off | truncated) ;;
    *)
        echo "render.sh: WHARF_LOG_CLIENT_IP must be off or truncated, not '$WHARF_LOG_CLIENT_IP'" >&2
        exit 2
        ;;
esac
exec envsubst '${WHARF_UPSTREAM} ${WHARF_LB_CIDR} ${WHARF_HTTP_PORT} ${WHARF_HTTPS_PORT} ${WHARF_ACCESS_LOG} ${WHARF_LOG_CLIENT_IP}' \
    < "${1:-$here/wharf.conf.template}"
