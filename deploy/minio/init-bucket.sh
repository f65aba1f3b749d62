#!/bin/sh
# One-shot (the `minio-init` service, image minio/mc): the private bucket and an app user limited to it.
# Idempotent: every step either creates or confirms what is there.
#
# Why a separate user: the root credentials administer MinIO; the API and worker only need objects in one
# bucket, so a leaked app key cannot create users or read other buckets.
#
# Environment: MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, S3_BUCKET, APP_S3_ACCESS_KEY, APP_S3_SECRET_KEY.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_BUCKET:?}"
: "${APP_S3_ACCESS_KEY:?}" "${APP_S3_SECRET_KEY:?}"
ENDPOINT="${MINIO_ENDPOINT:-http://minio:9000}"
POLICY=ecomdream-app

attempt=1
until mc alias set local "$ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
    if [ "$attempt" -ge 30 ]; then
        echo "MinIO at ${ENDPOINT} did not accept the root credentials" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

mc mb --ignore-existing "local/${S3_BUCKET}"
# Private: photos and training zips are personal data; customers get presigned image URLs.
mc anonymous set none "local/${S3_BUCKET}"

# Built with printf (a shell builtin): the mc image is minimal, so no cat, grep or mktemp are assumed.
policy_file=/tmp/ecomdream-app-policy.json
printf '%s\n' \
    '{' \
    '  "Version": "2012-10-17",' \
    '  "Statement": [' \
    '    {"Effect": "Allow",' \
    '     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],' \
    "     \"Resource\": [\"arn:aws:s3:::${S3_BUCKET}\"]}," \
    '    {"Effect": "Allow",' \
    '     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",' \
    '                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],' \
    "     \"Resource\": [\"arn:aws:s3:::${S3_BUCKET}/*\"]}" \
    '  ]' \
    '}' >"$policy_file"

# `policy create` adds or replaces the named policy; `user add` adds the user or updates its secret.
mc admin policy create local "$POLICY" "$policy_file"
mc admin user add local "$APP_S3_ACCESS_KEY" "$APP_S3_SECRET_KEY"
# Attaching an already attached policy is an error on recent MinIO: then confirm it is attached.
if ! mc admin policy attach local "$POLICY" --user "$APP_S3_ACCESS_KEY"; then
    case "$(mc admin user info local "$APP_S3_ACCESS_KEY")" in
        *"$POLICY"*) echo "policy ${POLICY} already attached" ;;
        *) echo "could not attach ${POLICY} to ${APP_S3_ACCESS_KEY}" >&2; exit 1 ;;
    esac
fi

echo "bucket ${S3_BUCKET} ready for ${APP_S3_ACCESS_KEY}"
