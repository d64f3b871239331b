"""What every configuration section shares: the base model, and how secrets are read."""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
)

CONFIG_ENV = "IT_RELAY_CONFIG"
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# Whether loading reads secrets now (files, credentials): commands that only read the database
# load without (secrets_unread()), so a shell without $CREDENTIALS_DIRECTORY runs them.
_READ_SECRETS: ContextVar[bool] = ContextVar("read_secrets", default=True)


class CredentialUnavailable(ValueError):
    """A `*_credential` (`key`) asked for outside systemd (no $CREDENTIALS_DIRECTORY)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{key} needs $CREDENTIALS_DIRECTORY, which systemd sets for the unit (LoadCredential=); "
            "from a shell, set it to the directory of the credential files"
        )
        self.key = key


def _read_secret(
    inline: SecretStr | None, file: Path | None, credential: str | None, what: str
) -> str | None:
    given = [x for x in (inline, file, credential) if x is not None]
    if len(given) > 1:
        raise ValueError(f"give only one of {what}, {what}_file, {what}_credential")
    if inline is not None:
        return inline.get_secret_value()
    if file is not None:
        path = file
    elif credential is not None:
        path = _credential_path(credential, f"{what}_credential")
    else:
        return None
    return _read_file(path, what)


def _credential_path(name: str, key: str) -> Path:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialUnavailable(key)
    return Path(directory) / name


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} from {path}: {exc.strerror}") from None


def _list_text(value: Any) -> Any:
    """A list given as text (an environment variable): JSON (`[5, 30]`) or comma-separated (`5,30`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("must be a JSON list ([5, 30]) or comma-separated values (5,30)") from None
    return [part.strip() for part in text.split(",") if part.strip()]


_NO_PROXY = "none"


def _proxy_url(value: str | None) -> str | None:
    """A proxy URL (http:// or https://: host, optional port and user:password), or "none";
    the message never quotes the value, which may hold credentials."""
    if value is None:
        return None
    text = value.strip()
    if text.lower() in ("", _NO_PROXY):
        return _NO_PROXY
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("the proxy's port must be a number from 0 to 65535") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError('must be an http:// or https:// proxy URL, or "none" (SOCKS is not supported)')
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be a proxy's address: scheme://[user:password@]host[:port], nothing after it")
    return text
