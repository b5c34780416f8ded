"""A signed-cookie storage for aiohttp-session that speaks Starlette's session cookie.

The session lives in the cookie: base64 JSON of the session's data, signed with
``itsdangerous.TimestampSigner`` — byte for byte what Starlette's ``SessionMiddleware``
writes and reads. Any demo process holding the secret can read it, aiohttp or Starlette,
which is what lets a mix of both serve one browser as a cluster, and nobody can forge it.
The data is readable by its owner, not encrypted (like Starlette's session cookie); use
aiohttp-session's ``EncryptedCookieStorage`` or a server-side storage in an app.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode, b64encode
from typing import Any

import itsdangerous
from aiohttp import web
from aiohttp_session import AbstractStorage, Session

from ._options import COOKIE_MAX_AGE, COOKIE_NAME

__all__ = ("SignedCookieStorage",)


class SignedCookieStorage(AbstractStorage):
    """Starlette's session cookie format, for aiohttp-session (see the module's docstring)."""

    def __init__(self, secret: str, *, cookie_name: str = COOKIE_NAME, **options: Any) -> None:
        if len(secret.encode()) < 16:
            raise ValueError("the cookie secret needs at least 16 bytes")
        super().__init__(cookie_name=cookie_name, samesite="Lax", max_age=COOKIE_MAX_AGE, **options)
        # Starlette signs with TimestampSigner(str(secret_key)): the same key, the same salt.
        self._signer = itsdangerous.TimestampSigner(secret)

    def _verified(self, cookie: str) -> tuple[dict[str, Any], int] | None:
        try:
            payload, signed_at = self._signer.unsign(cookie, max_age=COOKIE_MAX_AGE, return_timestamp=True)
            data = json.loads(b64decode(payload))
        except (itsdangerous.BadSignature, binascii.Error, ValueError):
            return None
        return (data, int(signed_at.timestamp())) if isinstance(data, dict) else None

    async def load_session(self, request: web.Request) -> Session:
        cookie = self.load_cookie(request)
        verified = self._verified(cookie) if cookie else None
        if verified is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        data, signed_at = verified
        return Session(None, data={"created": signed_at, "session": data}, new=False, max_age=self.max_age)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        if session.empty:
            self.save_cookie(response, "", max_age=session.max_age)
            return
        payload = b64encode(json.dumps(dict(session)).encode("utf-8"))
        self.save_cookie(response, self._signer.sign(payload).decode("utf-8"), max_age=session.max_age)
