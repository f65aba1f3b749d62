"""Multipart photo uploads: parsed as they stream in, size limits enforced per part while reading."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import PurePath

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ecomdream.clients.storage import Storage
from ecomdream.contracts.training import StagedPhoto
from ecomdream.errors import InvalidRequest, TooLarge

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """How much a customer may upload in one training request."""

    min_files: int = 5
    max_files: int = 30
    max_file_bytes: int = 25 * MB
    max_total_bytes: int = 300 * MB


class _LimitedParser(MultiPartParser):
    """Starlette's streaming parser (files spool to disk past 1 MB) that stops as soon as a limit is crossed."""

    def __init__(self, request: Request, limits: UploadLimits) -> None:
        stream = _counted(request, limits.max_total_bytes + 64 * 1024)
        super().__init__(request.headers, stream, max_files=limits.max_files, max_fields=100)
        self.limits = limits
        self._sizes: dict[int, int] = {}
        self.complete = False
        self.parts_seen = 0

    def on_part_begin(self) -> None:
        self.parts_seen += 1
        super().on_part_begin()

    def on_end(self) -> None:
        # Called only when the closing boundary arrives: without it the body was cut off.
        self.complete = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is not None:
            size = self._sizes.get(id(part), 0) + (end - start)
            self._sizes[id(part)] = size
            if size > self.limits.max_file_bytes:
                name = part.file.filename or "a photo"
                raise TooLarge(
                    f"{name} is larger than the {self.limits.max_file_bytes // MB} MB limit per photo"
                )
        super().on_part_data(data, start, end)


def _unique(names: list[str]) -> list[str]:
    """Browsers often name every photo `image.jpg`; number repeats so each problem names one photo."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            path = PurePath(name)
            name = f"{path.stem} ({count}){path.suffix}"
        unique.append(name)
    return unique


@dataclass
class ParsedUpload:
    """The files of one request, spooled to temporary files; close() releases them."""

    files: list[UploadFile] = field(default_factory=list)

    async def fingerprint(self) -> str:
        """A digest of every file's name and content, in order (an idempotent retry must send the same)."""
        whole = hashlib.sha256()
        for upload in self.files:
            whole.update(f"{upload.filename}\0{upload.size}\0".encode())
            await upload.seek(0)
            while chunk := await upload.read(1024 * 1024):
                whole.update(chunk)
        return whole.hexdigest()

    async def close(self) -> None:
        """Release the temporary files."""
        for upload in self.files:
            await upload.close()


async def _counted(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"The upload is larger than the {limit // MB} MB limit in total")
        yield chunk


async def parse_photos(request: Request, limits: UploadLimits) -> ParsedUpload:
    """Read every file of a multipart body (any field name), enforcing the count and size limits."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest("Send the photos as multipart/form-data, in the field `images`")
    parser = _LimitedParser(request, limits)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise InvalidRequest(f"You can only upload {limits.max_files} images") from exc
        raise InvalidRequest(f"The upload could not be read: {exc.message}") from exc
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    parsed = ParsedUpload(files=files)
    if not parser.complete and parser.parts_seen:
        # An interrupted upload (an empty body is just "no photos", below): training on the photos that happened to arrive whole is not what
        # the customer asked for.
        await parsed.close()
        raise InvalidRequest("The upload was cut off before it finished; please send all the photos again")
    total = sum(f.size or 0 for f in files)
    if total > limits.max_total_bytes:
        await parsed.close()
        raise TooLarge(f"The upload is larger than the {limits.max_total_bytes // MB} MB limit in total")
    if len(files) < limits.min_files:
        await parsed.close()
        raise InvalidRequest(f"You must provide at least {limits.min_files} images to successfully train AI")
    return parsed


async def stage_photos(
    storage: Storage, payment_id: uuid.UUID, upload_id: uuid.UUID, upload: ParsedUpload
) -> tuple[StagedPhoto, ...]:
    """Copy the spooled files to S3 under `staging/<payment>/<upload>/`, streaming each from disk."""
    names = _unique(
        [(f.filename or f"photo-{i + 1}").strip() or f"photo-{i + 1}" for i, f in enumerate(upload.files)]
    )
    staged = []
    for index, (name, file) in enumerate(zip(names, upload.files, strict=True)):
        key = f"staging/{payment_id}/{upload_id}/{index:02d}"
        await file.seek(0)
        # The UploadFile itself: its read() runs disk reads in a thread, never on the event loop.
        await storage.upload_file(key, file, file.content_type or "application/octet-stream")
        staged.append(StagedPhoto(name=name[:255], key=key))
    return tuple(staged)


async def discard(storage: Storage, payment_id: uuid.UUID, upload_id: uuid.UUID) -> None:
    """Remove a rejected upload's staged files (nothing half-done is left behind)."""
    with contextlib.suppress(Exception):
        await storage.delete_prefix(f"staging/{payment_id}/{upload_id}/")
