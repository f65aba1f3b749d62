"""S3 object storage through aioboto3: staging uploads, training zips, generated images."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig

from ecomdream.config import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# R2 and other S3-compatible stores reject the checksum trailers boto3 adds by default since 1.36.
S3_CONFIG = AioConfig(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=5,
    read_timeout=60,
)
SIGNED_URL_REUSE = 1 / 6  # of a presigned image URL's lifetime
SIGNED_URL_CACHE = 20_000  # URLs kept (about 6 MB)
# S3's limit of keys per list page and per DeleteObjects request.
BATCH = 1000


class Storage:
    """One bucket; a thin typed layer over the S3 client that the composition root opens and closes."""

    def __init__(
        self, client: S3Client, bucket: str, public_base_url: str | None = None, image_url_seconds: int = 3600
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.image_url_seconds = image_url_seconds
        # Presigned image URLs handed out again while fresh: signing is the costly part of a listing, and
        # the same URL lets browsers and CDNs cache the image instead of fetching it anew each time.
        self._signed: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @classmethod
    async def open(
        cls,
        stack: AsyncExitStack,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        bucket: str,
        public_base_url: str | None = None,
        image_url_seconds: int = 3600,
    ) -> Storage:
        """Open a client whose lifetime is bound to stack."""
        session = aioboto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        client = await stack.enter_async_context(
            session.client("s3", endpoint_url=endpoint_url, config=S3_CONFIG)
        )
        return cls(client, bucket, public_base_url, image_url_seconds)

    @classmethod
    async def from_settings(cls, settings: Settings, stack: AsyncExitStack) -> Storage:
        """The configured bucket, closed with stack."""
        return await cls.open(
            stack,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id.get_secret_value(),
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            bucket=settings.s3_bucket,
            public_base_url=settings.s3_public_base_url,
            image_url_seconds=settings.image_url_minutes * 60,
        )

    async def ping(self) -> None:
        """Raise if the bucket cannot be reached."""
        await self.client.head_bucket(Bucket=self.bucket)

    async def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Store one small object."""
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    async def get(self, key: str) -> bytes:
        """Read one object whole (only for small objects)."""
        response = await self.client.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
            return data

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream one object in chunks."""
        response = await self.client.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            while chunk := await body.read(chunk_size):
                yield chunk

    async def exists(self, key: str) -> bool:
        """Whether key exists."""
        try:
            await self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    async def size(self, key: str) -> int:
        """Size in bytes of an existing object."""
        response = await self.client.head_object(Bucket=self.bucket, Key=key)
        return int(response["ContentLength"])

    async def upload_file(self, key: str, fileobj: object, content_type: str) -> None:
        """Stream a file object to key (multipart for large files), without reading it whole.

        `fileobj.read` may be a coroutine function (an UploadFile), so disk reads stay off the event loop.
        """
        await self.client.upload_fileobj(
            fileobj,  # type: ignore[arg-type]
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
        )

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under prefix."""
        return [key async for page in self.pages(prefix) for key, _ in page]

    async def pages(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        """The keys under prefix with their last-modified times, a page (up to 1,000) at a time."""
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": BATCH}
        ):
            found = [(obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []) if "Key" in obj]
            if found:
                yield found

    async def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete these objects (missing ones are fine), up to 1,000 in one request."""
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            response = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"{len(errors)} objects not deleted; {first.get('Key')}: {first.get('Message')}"
                )

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix, a page at a time; how many were deleted (0 when already gone)."""
        deleted = 0
        while True:
            # Always the first page: what was deleted is gone from the listing.
            listed = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=BATCH)
            keys = [obj["Key"] for obj in listed.get("Contents", []) if "Key" in obj]
            if not keys:
                return deleted
            await self.delete_keys(keys)
            deleted += len(keys)

    async def presigned_get(self, key: str, expires_in: int = 3600) -> str:
        """A time-limited GET URL for a private object."""
        url: str = await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )
        return url

    async def public_url(self, key: str) -> str:
        """The CDN URL when a public base URL is configured, else a presigned URL.

        A presigned URL lives `image_url_seconds` (an hour by default) and is reused for `SIGNED_URL_REUSE`
        of that, so every URL handed out is valid for at least the rest (50 minutes by default).
        """
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        expires_in = self.image_url_seconds
        now = time.monotonic()
        cached = self._signed.get(key)
        if cached is not None and now - cached[1] < expires_in * SIGNED_URL_REUSE:
            self._signed.move_to_end(key)
            return cached[0]
        url = await self.presigned_get(key, expires_in)
        self._signed[key] = (url, now)
        self._signed.move_to_end(key)
        while len(self._signed) > SIGNED_URL_CACHE:
            self._signed.popitem(last=False)
        return url

    async def start_multipart(self, key: str, content_type: str) -> str:
        """Begin a multipart upload; returns its upload id."""
        response = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )
        return response["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, object]:
        """Upload one part; returns the part descriptor for completion."""
        response = await self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, object]]) -> None:
        """Finish a multipart upload."""
        await self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abandon a multipart upload so no half-written object is left."""
        await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
