"""The Application Insights connection string, parsed and checked once (for telemetry and for
``setup-secrets``) with messages that never repeat the value, and the environment the SDKs' exporters
are built in."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import NamedTuple
from urllib.parse import urlparse

from diabetes_spark.errors import ConfigurationError
from diabetes_spark.runtime import environment

#: Where a bare instrumentation key sends (the SDKs' default; a connection string names a regional one).
DEFAULT_ENDPOINT = "https://dc.services.visualstudio.com"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_EXPECTED = (
    "expected 'InstrumentationKey=<GUID>;IngestionEndpoint=https://<region>.in.applicationinsights.azure.com/' "
    "(the Application Insights resource's Overview page shows it) or a bare instrumentation key (a GUID)"
)
#: What an SDK would read on its own: a connection string or key besides the one it is given.
_SDK_OWN_SETTINGS = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "APPINSIGHTS_INSTRUMENTATIONKEY")


class Connection(NamedTuple):
    """A parsed connection string: what the exporters need, and whether it asks for Entra ID."""

    key: str
    endpoint: str
    #: ``Authorization=AAD``: send with an Entra ID token (the ``opentelemetry`` backend only).
    entra_id: bool = False
    #: ``AADAudience``, a sovereign cloud's token audience ("": the public cloud's).
    audience: str = ""

    def for_exporter(self) -> str:
        """The normalised string the exporters get, without ``Authorization``: the Azure Monitor
        exporter refuses any but ikey there and takes Entra ID as a credential object."""
        text = f"InstrumentationKey={self.key};IngestionEndpoint={self.endpoint}"
        return text + (f";AADAudience={self.audience}" if self.audience else "")


def parse_connection_string(value: str, source: str) -> Connection:
    """The instrumentation key and ingestion endpoint of a connection string or a bare key.

    Args:
        value: ``InstrumentationKey=<guid>[;IngestionEndpoint=<url>][;...]`` (keys in any case,
            stray ``;`` ignored), or a bare key. Without ``IngestionEndpoint`` the endpoint follows
            ``EndpointSuffix``/``Location``, else the global default.
        source: Where the value came from, for the error message.

    Returns:
        The key in lower case (the SDKs accept no other), the endpoint without a trailing ``/``
        (the SDKs append ``/v2.1/track``), and whether the string says ``Authorization=AAD``.

    Raises:
        ConfigurationError: The value is malformed. The message says what is wrong, never the value.
    """

    def invalid(problem: str) -> ConfigurationError:
        return ConfigurationError(f"invalid Application Insights connection string ({source}): {problem}; {_EXPECTED}")

    text = value.strip()
    if _GUID.match(text):
        return Connection(text.lower(), DEFAULT_ENDPOINT)
    fields: dict[str, str] = {}
    for part in filter(str.strip, text.split(";")):
        name, sep, field = part.partition("=")
        if not sep:
            raise invalid("a part has no '='")
        fields[name.strip().lower()] = field.strip()
    key = fields.get("instrumentationkey", "")
    if not key:
        raise invalid("it has no InstrumentationKey")
    if not _GUID.match(key):
        raise invalid("its InstrumentationKey is not a GUID")
    authorization = fields.get("authorization", "ikey").lower()
    if authorization not in ("ikey", "aad"):
        raise invalid("its Authorization is neither ikey nor AAD")
    endpoint = fields.get("ingestionendpoint")
    if endpoint is None:
        suffix, location = fields.get("endpointsuffix"), fields.get("location")
        endpoint = f"https://{location + '.' if location else ''}dc.{suffix}" if suffix else DEFAULT_ENDPOINT
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc or url.query or "=" in endpoint:
        raise invalid("its IngestionEndpoint is not an http(s) URL")
    return Connection(key.lower(), endpoint.rstrip("/"), authorization == "aad", fields.get("aadaudience", ""))


def sdk_environment(*switched_on: str) -> AbstractContextManager[None]:
    """The environment an SDK's constructors see: no connection string of its own, and the
    ``switched_on`` variables ``true`` (the switches that keep statsbeat and remote configuration off).

    A constructor may re-parse ``$APPLICATIONINSIGHTS_CONNECTION_STRING`` even when given a string
    (OpenCensus fails on a bare key or a trailing ``;``), and statsbeat would call Microsoft's
    endpoints. The process's environment is put back as it was after construction.
    """
    return environment({**dict.fromkeys(_SDK_OWN_SETTINGS), **dict.fromkeys(switched_on, "true")})
