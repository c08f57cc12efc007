"""API keys: `Authorization: Bearer <key>` on `/v1` and `/v2`, and a session namespace per key."""

import hashlib
import hmac
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import refuse_websocket, send_error
from service.errors import Forbidden, Unauthorized
from service.settings import Settings

PROTECTED_PREFIXES = ("/v1/", "/v2/")
PROTECTED_PATHS = frozenset({"/v1", "/v2"})
OPEN_PREFIXES = ("/v2/health/",)
ADMIN_PATH = re.compile(r"^/v1/models/[^/]+/reload$")
CHALLENGE = b'Bearer realm="lstm-stream"'


# RFC 6750's token68, what a bearer token may hold: no ',' (the variable's separator),
# '#' (the file's comment sign) or space, so a key can never be cut silently into another.
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
KEY_RULE = "an API key may hold only letters, digits and - . _ ~ + / (then = padding)"


def _checked(key: str, where: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"{where} is not one API key: {KEY_RULE}")
    return key


def load_api_keys(settings: Settings) -> list[str]:
    """The configured keys: `api_keys` (comma-separated) and the lines of `api_keys_file`
    (a line starting with `#` is a comment), each checked to be one bearer token."""
    keys: list[str] = []
    if settings.api_keys is not None:
        entries = [key.strip() for key in settings.api_keys.get_secret_value().split(",")]
        keys += [
            _checked(key, f"entry {number} of LSTM_API_KEYS")
            for number, key in enumerate(entries, 1)
            if key
        ]
    if settings.api_keys_file is not None:
        lines = settings.api_keys_file.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            key = line.strip()
            if key and not key.startswith("#"):
                keys.append(_checked(key, f"line {number} of {settings.api_keys_file}"))
    if not keys and (settings.api_keys is not None or settings.api_keys_file is not None):
        # Fail closed: a key setting that names no key is a mistake, not a wish to run open.
        raise ValueError("LSTM_API_KEYS / LSTM_API_KEYS_FILE is set but names no API key")
    return keys


def load_admin_keys(settings: Settings) -> list[str]:
    if settings.admin_api_keys is None:
        return []
    keys = [key.strip() for key in settings.admin_api_keys.get_secret_value().split(",")]
    if not any(keys):
        raise ValueError("LSTM_ADMIN_API_KEYS is set but names no key")
    return [key for key in keys if key]


def namespace_of(key: str) -> str:
    """A stable id of a key that does not reveal it: where its sessions live, what logs show."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def is_protected(path: str) -> bool:
    if path in PROTECTED_PATHS:
        return True
    return path.startswith(PROTECTED_PREFIXES) and not path.startswith(OPEN_PREFIXES)


class ApiKeys:
    """The known keys, checked in constant time: every presented key is hashed and
    compared with every known key's hash, with no early exit."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._known = [(hashlib.sha256(key.encode()).digest(), namespace_of(key)) for key in keys]

    def namespace_for(self, presented: bytes) -> str | None:
        digest = hashlib.sha256(presented).digest()
        found = None
        for known, namespace in self._known:
            if hmac.compare_digest(digest, known):
                found = namespace
        return found


def bearer_token(authorization: bytes) -> bytes | None:
    """The key in an `Authorization: Bearer <key>` value (an HTTP header or gRPC metadata)."""
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return None


def _bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(bytes(value))
    return None


class ApiKeyAuth:
    """401 `unauthorized` for protected paths without a known key; otherwise sets
    `state.namespace` to the key's namespace, which the routes pass to the core.
    Admin paths (model reloads) take only admin keys: 403 `forbidden` for a plain key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys | None, admin: ApiKeys | None = None) -> None:
        self.app = app
        self.keys = keys
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if ADMIN_PATH.match(scope["path"]):
            admin = self.admin.namespace_for(token) if self.admin and token else None
            if admin is None:
                await self._refuse(scope, send, token)
                return
        elif self.keys is not None:
            namespace = self.keys.namespace_for(token) if token is not None else None
            if namespace is None:
                challenge = ((b"www-authenticate", CHALLENGE),)
                if scope["type"] == "websocket":
                    await refuse_websocket(scope, receive, send, Unauthorized(), challenge)
                else:
                    await send_error(scope, send, Unauthorized(), challenge)
                return
            scope.setdefault("state", {})["namespace"] = namespace
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, token: bytes | None) -> None:
        known = self.keys is not None and token is not None and self.keys.namespace_for(token)
        if known:
            await send_error(scope, send, Forbidden())
        else:
            await self._unauthorized(scope, send, admin=True)

    @staticmethod
    async def _unauthorized(scope: Scope, send: Send, admin: bool) -> None:
        await send_error(scope, send, Unauthorized(admin), ((b"www-authenticate", CHALLENGE),))
