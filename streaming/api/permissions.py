"""API permissions.

With API_AUTH_REQUIRED every endpoint but the caller's own (notifications, tokens) needs an admin.
Without it, anyone who reaches the server may publish and read aggregate stats, public channels
and their history; live connections (addresses, user agents) and closing them stay for admins,
and protected channels for who may subscribe to them (README, "HTTP API").
"""

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


class IsAdmin(BasePermission):
    """An admin whatever API_AUTH_REQUIRED says: live connections and closing them."""

    message = "This endpoint needs an admin: a staff user, a token with role=admin, or an API key."

    def allows_anonymous(self) -> bool:
        return False

    def has_permission(self, request: Any, view: Any) -> bool:
        return request_identity(request).is_admin
