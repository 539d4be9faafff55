"""What telemetry is configured with: the Application Insights connection string, and the secret
values that must never leave the process in a log record, dimension or span attribute."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urlparse

from diabetes_spark.errors import ConfigurationError

__all__ = ["parse_connection_string", "Redactor", "REDACTED", "DEFAULT_ENDPOINT", "MIN_SECRET_LENGTH"]

REDACTED = "[REDACTED]"
#: Where a bare instrumentation key sends (the SDK's default; a connection string names a regional one).
DEFAULT_ENDPOINT = "https://dc.services.visualstudio.com"
#: Shorter values are not redacted: replacing every "ab" would garble every message, and no real
#: key or connection string is that short.
MIN_SECRET_LENGTH = 4

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_EXPECTED = (
    "expected 'InstrumentationKey=<GUID>;IngestionEndpoint=https://<region>.in.applicationinsights.azure.com/' "
    "(the Application Insights resource's Overview page shows it) or a bare instrumentation key (a GUID)"
)


def parse_connection_string(value: str, source: str) -> tuple[str, str]:
    """The instrumentation key and ingestion endpoint of a connection string or a bare key.

    Args:
        value: ``InstrumentationKey=<guid>[;IngestionEndpoint=<url>][;...]`` (keys in any case,
            stray ``;`` ignored), or a bare key. Without ``IngestionEndpoint`` the endpoint follows
            ``EndpointSuffix``/``Location``, else the global default.
        source: Where the value came from, for the error message.

    Returns:
        ``(key, endpoint)``: the key in lower case (the SDK accepts no other), the endpoint without
        a trailing ``/`` (the SDK appends ``/v2.1/track``).

    Raises:
        ConfigurationError: The value is malformed. The message says what is wrong, never the value.
    """

    def invalid(problem: str) -> ConfigurationError:
        return ConfigurationError(f"invalid Application Insights connection string ({source}): {problem}; {_EXPECTED}")

    text = value.strip()
    if _GUID.match(text):
        return text.lower(), DEFAULT_ENDPOINT
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, field = part.partition("=")
        if not sep:
            raise invalid("a part has no '='")
        fields[name.strip().lower()] = field.strip()
    key = fields.get("instrumentationkey", "")
    if not key:
        raise invalid("it has no InstrumentationKey")
    if not _GUID.match(key):
        raise invalid("its InstrumentationKey is not a GUID")
    if fields.get("authorization", "ikey").lower() != "ikey":
        raise invalid("only Authorization=ikey is supported (Entra ID authentication needs a credential object)")
    endpoint = fields.get("ingestionendpoint")
    if endpoint is None:
        suffix, location = fields.get("endpointsuffix"), fields.get("location")
        endpoint = f"https://{location + '.' if location else ''}dc.{suffix}" if suffix else DEFAULT_ENDPOINT
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc or url.query or "=" in endpoint:
        raise invalid("its IngestionEndpoint is not an http(s) URL")
    return key.lower(), endpoint.rstrip("/")


class Redactor:
    """Replaces secret values, and their URL-encoded and base64 forms, with ``[REDACTED]``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Redact ``values`` from now on (empty and very short values are ignored)."""
        forms = set()
        for value in values:
            text = "" if value is None else str(value)
            for secret in {text, text.strip()}:
                if len(secret) < MIN_SECRET_LENGTH:
                    continue
                raw = secret.encode("utf-8")
                forms |= {
                    secret,
                    quote(secret, safe=""),
                    quote_plus(secret, safe=""),
                    base64.b64encode(raw).decode("ascii").rstrip("="),
                    base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
                }
        with self._lock:
            new = {f for f in forms if len(f) >= MIN_SECRET_LENGTH} - self._forms
            if not new:
                return
            self._forms |= new
            # Longest first, so a secret's encoding is replaced whole even when it contains another.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))

    def __call__(self, text: str) -> str:
        """``text`` with every secret form replaced."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def scrub(self, value: Any) -> Any:
        """Redact every string in a JSON-like value; dicts and lists are changed in place."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            for key in list(value):
                item = self.scrub(value[key])
                clean = self(key) if isinstance(key, str) else key
                if clean != key:
                    del value[key]
                value[clean] = item
            return value
        if isinstance(value, list):
            value[:] = [self.scrub(v) for v in value]
            return value
        if isinstance(value, tuple):
            return tuple(self.scrub(v) for v in value)
        return value
