"""API permissions: admin-only publishing and inspection when API_AUTH_REQUIRED."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission

from streaming.api.authentication import request_identity


class IsAdminWhenRequired(BasePermission):
    """With API_AUTH_REQUIRED, only admins (staff, JWT role=admin, API key); else anyone."""

    message = "This endpoint needs an admin: a staff user, a token with role=admin, or an API key."

    def allows_anonymous(self) -> bool:
        """Whether a caller without credentials gets in (the OpenAPI schema says so)."""
        return not settings.REALTIME.api_auth_required

    def has_permission(self, request: Any, view: Any) -> bool:
        if not settings.REALTIME.api_auth_required:
            return True
        return request_identity(request).is_admin


class IsAuthenticatedWhenRequired(BasePermission):
    """With API_AUTH_REQUIRED, any authenticated identity; else anyone."""

    message = "Authentication credentials were not provided."

    def allows_anonymous(self) -> bool:
        return not settings.REALTIME.api_auth_required

    def has_permission(self, request: Any, view: Any) -> bool:
        if not settings.REALTIME.api_auth_required:
            return True
        return request_identity(request).is_authenticated


class IsAuthenticatedCaller(BasePermission):
    """Any authenticated identity (a user's own resources, such as notifications)."""

    message = "Authentication credentials were not provided."

    def allows_anonymous(self) -> bool:
        return False

    def has_permission(self, request: Any, view: Any) -> bool:
        return request_identity(request).is_authenticated
