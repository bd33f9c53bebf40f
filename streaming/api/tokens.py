"""Token endpoints (simplejwt) whose access tokens carry the claims our identities read."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView, TokenVerifyView

from streaming.api.serializers import BODY_ERRORS
from streaming.auth import ADMIN_ROLE

# Refused bodies (400, 413, 415) and refused credentials or tokens (401); never 403.
TOKEN_ERRORS = {code: error for code, error in BODY_ERRORS.items() if code != 403}
TokenPair = inline_serializer("TokenPair", {"access": serializers.CharField(), "refresh": serializers.CharField()})
AccessTokenOnly = inline_serializer("AccessToken", {"access": serializers.CharField()})
TokenValid = inline_serializer("TokenValid", {})


def _stamp_user_claims(token: Any, user: Any) -> Any:
    """The claims our identities read (`name`, `role`), from the user as they are now."""
    token["name"] = user.get_username()
    token["role"] = ADMIN_ROLE if user.is_staff else "user"
    return token


class StreamingTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Username/password → a token pair whose claims name the user and their role."""

    @classmethod
    def get_token(cls, user: Any) -> Any:
        return _stamp_user_claims(super().get_token(user), user)


class StreamingTokenRefreshSerializer(TokenRefreshSerializer):
    """A refresh token → an access token whose claims are read again from the user.

    simplejwt copies the refresh token's claims into the new access token: a user demoted from
    staff kept `role: admin` for the refresh token's whole lifetime, and a deleted user's refresh
    raised DoesNotExist (HTTP 500). Here the user must still exist and be active (401 otherwise),
    and `name`/`role` are theirs at the time of the refresh.
    """

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first() if user_id else None
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed("No active account found for the given token.", "no_active_account")
        return {"access": str(_stamp_user_claims(refresh.access_token, user))}


@extend_schema_view(post=extend_schema(responses={200: TokenPair, **TOKEN_ERRORS}))
class TokenObtainView(TokenObtainPairView):
    """POST username and password; get `access` and `refresh` tokens."""

    serializer_class = StreamingTokenObtainPairSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []


@extend_schema_view(post=extend_schema(responses={200: AccessTokenOnly, **TOKEN_ERRORS}))
class TokenRefreshPublicView(TokenRefreshView):
    """POST a refresh token; get a new access token."""

    serializer_class = StreamingTokenRefreshSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []


@extend_schema_view(post=extend_schema(responses={200: TokenValid, **TOKEN_ERRORS}))
class TokenVerifyPublicView(TokenVerifyView):
    """POST a token; 200 if it is valid."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
