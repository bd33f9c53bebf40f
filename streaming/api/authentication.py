"""DRF authentication with the product's credentials (JWT, API key; README, "Authentication and
security"), and the caller's identity."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny

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


class CredentialAuthenticationScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security of CredentialAuthentication: a bearer JWT or an API key.

    Where the permissions let anonymous callers in (API_AUTH_REQUIRED=false), the operation's
    security also lists `{}` (no credentials), so the schema says what the running server does.
    """

    target_class = CredentialAuthentication
    name = ["bearerAuth", "apiKeyAuth"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            {"type": "apiKey", "in": "header", "name": settings.REALTIME.ws_api_key_header},
        ]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list]]:
        requirements: list[dict[str, list]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
        permissions = auto_schema.view.get_permissions()
        if all(isinstance(p, AllowAny) or getattr(p, "allows_anonymous", lambda: False)() for p in permissions):
            requirements.append({})
        return requirements
