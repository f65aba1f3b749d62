"""Request dependencies: the app state, a transactional session, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.state import AppState
from ecomdream.clients.storage import Storage
from ecomdream.config import Settings


def get_state(request: Request) -> AppState:
    """The long-lived clients built by the lifespan."""
    state: AppState = request.app.state.ecomdream
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_read_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A read-only session for GET routes: each statement on its own (autocommit, no BEGIN/COMMIT round trips).

    Routes that write open their own transaction with `transaction(state.sessionmaker)`.
    """
    async with state.read_sessionmaker() as session:
        yield session


def get_settings(state: StateDep) -> Settings:
    """The process settings."""
    return state.settings


def get_temporal(state: StateDep) -> Client:
    """The shared Temporal client."""
    return state.temporal


def get_storage(state: StateDep) -> Storage:
    """The shared object storage."""
    return state.storage


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
StorageDep = Annotated[Storage, Depends(get_storage)]
