"""Token endpoints (simplejwt) whose access tokens carry the claims our identities read."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView, TokenVerifyView

from streaming.auth import ADMIN_ROLE


class StreamingTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Username/password → a token pair whose claims name the user and their role."""

    @classmethod
    def get_token(cls, user: Any) -> Any:
        token = super().get_token(user)
        token["name"] = user.get_username()
        token["role"] = ADMIN_ROLE if user.is_staff else "user"
        return token


class TokenObtainView(TokenObtainPairView):
    """POST username and password; get `access` and `refresh` tokens."""

    serializer_class = StreamingTokenObtainPairSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []


class TokenRefreshPublicView(TokenRefreshView):
    """POST a refresh token; get a new access token."""

    permission_classes = [AllowAny]
    authentication_classes: list = []


class TokenVerifyPublicView(TokenVerifyView):
    """POST a token; 200 if it is valid."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
