"""The Application Insights connection string: parsed and checked once, for telemetry and for
``setup-secrets``, with messages that never repeat the value."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from diabetes_spark.errors import ConfigurationError

__all__ = ["parse_connection_string", "DEFAULT_ENDPOINT"]

#: Where a bare instrumentation key sends (the SDK's default; a connection string names a regional one).
DEFAULT_ENDPOINT = "https://dc.services.visualstudio.com"

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
