#!/bin/sh
# Alertmanager's entrypoint in docker-compose.yml: renders alertmanager.yml (next to this script) from the
# environment, then runs the command it is given (Alertmanager itself). Alertmanager does not expand environment
# variables in its configuration.
#
#   TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID  the operators' Telegram chat: both or neither (chat ids are numbers;
#                                         a group's is negative)
#   ALERT_WEBHOOK_URL                     a generic webhook receiving Alertmanager's JSON, for other tools
#   ALERTMANAGER_CONFIG_DIR               where the rendered configuration goes (default /tmp/alertmanager)
#
# Each receiver is optional. Half a Telegram setup stops the container with a message naming what is missing.
# The token and the URL are written to files only this user can read (bot_token_file, url_file): the rendered
# configuration, which Alertmanager shows on its status page, holds no secret.
set -eu

template="$(dirname "$0")/alertmanager.yml"
out="${ALERTMANAGER_CONFIG_DIR:-/tmp/alertmanager}"
token="${TELEGRAM_BOT_TOKEN:-}"
chat="${TELEGRAM_CHAT_ID:-}"
webhook="${ALERT_WEBHOOK_URL:-}"

refuse() {
    echo "alertmanager: $1" >&2
    exit 1
}

if [ -n "$token" ] && [ -z "$chat" ]; then
    refuse "TELEGRAM_BOT_TOKEN is set but TELEGRAM_CHAT_ID is not: set both (or neither, for no Telegram)"
fi
if [ -z "$token" ] && [ -n "$chat" ]; then
    refuse "TELEGRAM_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not: set both (or neither, for no Telegram)"
fi
if [ -n "$chat" ]; then
    case "${chat#-}" in
        '' | *[!0-9]*) refuse "TELEGRAM_CHAT_ID must be the chat's numeric id (a group's is negative)" ;;
    esac
fi
if [ -z "$token" ] && [ -z "$webhook" ]; then
    echo "alertmanager: no receiver configured (TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID, or ALERT_WEBHOOK_URL):" \
        "alerts show in Grafana and Alertmanager's UI but are sent nowhere" >&2
fi

umask 077
mkdir -p "$out"
rm -f "$out/telegram_bot_token" "$out/webhook_url"
[ -z "$token" ] || printf '%s' "$token" >"$out/telegram_bot_token"
[ -z "$webhook" ] || printf '%s' "$webhook" >"$out/webhook_url"

# Keep the lines of a receiver only when it is configured ($2 not empty).
keep() {
    if [ -n "$2" ]; then cat; else sed "/# $1\$/d"; fi
}
keep telegram "$token" <"$template" | keep webhook "$webhook" |
    sed -e "s|\${TELEGRAM_CHAT_ID}|$chat|g" -e "s|\${ALERTMANAGER_CONFIG_DIR}|$out|g" >"$out/alertmanager.yml"

unset TELEGRAM_BOT_TOKEN ALERT_WEBHOOK_URL
exec "$@"
