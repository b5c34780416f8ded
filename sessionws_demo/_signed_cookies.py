"""A signed-cookie storage for aiohttp-session, with the standard library only.

The session lives in the cookie (JSON, base64url) with an HMAC-SHA256 over it, so
any process holding the secret can read it — which is what lets several demo
processes serve one browser as a cluster — and nobody can forge it. The data is
readable by its owner, not encrypted (like Starlette's session cookie); use
aiohttp-session's ``EncryptedCookieStorage`` or a server-side storage in an app.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session

__all__ = ("SignedCookieStorage",)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCookieStorage(AbstractStorage):
    """``<base64url JSON>.<base64url HMAC-SHA256>`` in one cookie."""

    def __init__(self, secret: bytes, *, cookie_name: str = "SESSIONWS_DEMO", **options: Any) -> None:
        if len(secret) < 16:
            raise ValueError("the cookie secret needs at least 16 bytes")
        super().__init__(cookie_name=cookie_name, samesite="Lax", **options)
        self._key = hashlib.sha256(b"sessionws-demo-cookie:" + secret).digest()

    def _sign(self, payload: bytes) -> str:
        return _encode(hmac.new(self._key, payload, hashlib.sha256).digest())

    def _verified(self, cookie: str) -> dict[str, Any] | None:
        body, _, signature = cookie.partition(".")
        try:
            payload = _decode(body)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        return data if isinstance(data, dict) and isinstance(data.get("session"), dict) else None

    async def load_session(self, request: web.Request) -> Session:
        cookie = self.load_cookie(request)
        data = self._verified(cookie) if cookie else None
        if data is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        return Session(
            None,
            data={"created": int(data.get("created") or 0), "session": data["session"]},
            new=False,
            max_age=self.max_age,
        )

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        if session.empty:
            self.save_cookie(response, "", max_age=session.max_age)
            return
        payload = json.dumps({"created": session.created, "session": dict(session)}, separators=(",", ":"))
        encoded = payload.encode("utf-8")
        self.save_cookie(response, f"{_encode(encoded)}.{self._sign(encoded)}", max_age=session.max_age)
