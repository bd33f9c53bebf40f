"""Token endpoints (simplejwt) whose access tokens carry the claims our identities read."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView, TokenVerifyView

from streaming.api.serializers import BODY_ERRORS
from streaming.auth import ADMIN_ROLE

# Refused bodies (400, 413, 415) and refused credentials or tokens (401); never 403.
TOKEN_ERRORS = {code: error for code, error in BODY_ERRORS.items() if code != 403}
TokenPair = inline_serializer("TokenPair", {"access": serializers.CharField(), "refresh": serializers.CharField()})
AccessTokenOnly = inline_serializer("AccessToken", {"access": serializers.CharField()})
TokenValid = inline_serializer("TokenValid", {})


class StreamingTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Username/password → a token pair whose claims name the user and their role."""

    @classmethod
    def get_token(cls, user: Any) -> Any:
        token = super().get_token(user)
        token["name"] = user.get_username()
        token["role"] = ADMIN_ROLE if user.is_staff else "user"
        return token


@extend_schema_view(post=extend_schema(responses={200: TokenPair, **TOKEN_ERRORS}))
class TokenObtainView(TokenObtainPairView):
    """POST username and password; get `access` and `refresh` tokens."""

    serializer_class = StreamingTokenObtainPairSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []


@extend_schema_view(post=extend_schema(responses={200: AccessTokenOnly, **TOKEN_ERRORS}))
class TokenRefreshPublicView(TokenRefreshView):
    """POST a refresh token; get a new access token."""

    permission_classes = [AllowAny]
    authentication_classes: list = []


@extend_schema_view(post=extend_schema(responses={200: TokenValid, **TOKEN_ERRORS}))
class TokenVerifyPublicView(TokenVerifyView):
    """POST a token; 200 if it is valid."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
