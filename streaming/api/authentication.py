"""DRF authentication with the credentials of SPEC §4 (JWT, API key), and the caller's identity."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from streaming import metrics
from streaming.auth import ANONYMOUS, Identity, authenticator, credentials_from_request, identity_for_user
from streaming.errors import Unauthenticated


class StreamingUser:
    """`request.user` for a token or API-key caller: a stateless user built from the identity."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.pk = self.id = identity.user_id
        self.username = identity.name or identity.user_id or identity.kind
        self.is_staff = self.is_superuser = identity.is_admin

    def __str__(self) -> str:
        return self.username

    def get_username(self) -> str:
        return self.username


class CredentialAuthentication(BaseAuthentication):
    """`Authorization: Bearer <jwt>`, `?token=`, the API-key header or `?api_key=`."""

    def authenticate(self, request: Any) -> tuple[StreamingUser, Identity] | None:
        credentials = credentials_from_request(request)
        if not credentials.present:
            return None
        try:
            identity = authenticator.resolve(credentials)
        except Unauthenticated as error:
            metrics.AUTH_FAILURES.labels("api").inc()
            raise exceptions.AuthenticationFailed(error.detail) from None
        return StreamingUser(identity), identity

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def request_identity(request: Any) -> Identity:
    """The identity of an API caller: token/API key, else the session user, else anonymous."""
    if isinstance(request.auth, Identity):
        return request.auth
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return identity_for_user(user)
    return ANONYMOUS
