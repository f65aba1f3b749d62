#!/bin/sh
# One-shot (the `temporal-init` service, image temporalio/admin-tools): make sure the namespace exists and that
# every custom search attribute given as an argument is registered as Keyword. Idempotent: a second run, or a
# run against a namespace registered by hand, changes nothing and succeeds.
#
#   init-namespace.sh PaymentId VersionId JourneyStage PlanName NeedsOperator
#
# Environment: TEMPORAL_ADDRESS (host:port), NAMESPACE, NAMESPACE_RETENTION (how long closed workflows stay
# visible; open journeys are not affected, however long they run).
#
# One `create` call per attribute, each with exactly one `--name` and one `--type`: the CLI pairs the i-th
# --name with the i-th --type, so `--name A --name B --type Keyword` silently registers only A.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${NAMESPACE:-default}"
RETENTION="${NAMESPACE_RETENTION:-720h}"

if [ "$#" -eq 0 ]; then
    echo "usage: $0 SEARCH_ATTRIBUTE..." >&2
    exit 2
fi

# Like samples-server's create-namespace.sh: talk to the IPv4 address, so the CLI does not try an IPv6 record
# the server does not listen on.
host="${ADDRESS%:*}"
port="${ADDRESS##*:}"
ip="$(getent ahosts "$host" 2>/dev/null | awk '/STREAM/ && $1 ~ /\./ { print $1; exit }')" || true
if [ -n "$ip" ]; then
    ADDRESS="${ip}:${port}"
fi

tctl_() {
    temporal "$@" --address "$ADDRESS"
}

echo "waiting for the Temporal frontend at ${ADDRESS}"
attempt=1
until tctl_ operator cluster health >/dev/null 2>&1; do
    if [ "$attempt" -ge 60 ]; then
        echo "Temporal did not report itself healthy" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

if tctl_ operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace ${NAMESPACE} exists"
else
    tctl_ operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
    echo "namespace ${NAMESPACE} created (retention ${RETENTION})"
fi

# True when the namespace lists the attribute as a Keyword.
has_keyword_attribute() {
    tctl_ operator search-attribute list --namespace "$NAMESPACE" 2>/dev/null \
        | grep -w -- "$1" | grep -qi keyword
}

ensure_keyword_attribute() {
    name="$1"
    attempt=1
    # A new namespace takes a few seconds to reach every frontend cache, and the server may answer
    # "already exists": the list, not the create call's exit status, decides.
    until has_keyword_attribute "$name"; do
        if [ "$attempt" -gt 15 ]; then
            echo "search attribute ${name} is not registered as Keyword" >&2
            return 1
        fi
        tctl_ operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type Keyword \
            || echo "create ${name} failed (attempt ${attempt}); checking again" >&2
        attempt=$((attempt + 1))
        sleep 2
    done
    echo "search attribute ${name} (Keyword) registered"
}

for name in "$@"; do
    ensure_keyword_attribute "$name"
done
