"""The one scrubber: secret values out of logs, telemetry dimensions and attributes, and errors.

:class:`Redactor` replaces registered secrets, and their URL-encoded and base64 forms, with
``[REDACTED]``. :func:`hide_in_logs` puts one on the loggers that echo call arguments (py4j), and
:data:`SPARK_REDACTION_REGEX` is what Spark itself hides in its UI, event log and conf dumps.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
#: Shorter values are not redacted: replacing every "ab" would garble every message, and no real
#: key or connection string is that short.
MIN_SECRET_LENGTH = 4

#: Spark's default redaction pattern, extended so Azure storage secrets never show in the UI, the
#: event log or ``spark.conf`` dumps. Spark hides a setting's value when the pattern matches its key
#: *or* its value. Keys: the ADLS account key ``fs.azure.account.key.<account>...`` (also with the
#: ``spark.hadoop.`` prefix), ``fs.azure.sas.*``, OAuth client secrets, and the Azure CLI's
#: ``AZURE_STORAGE_KEY``, ``..._SAS_TOKEN`` and ``..._CONNECTION_STRING`` as ``spark.executorEnv.*``.
#: Values: a connection string's ``AccountKey=``, ``SharedAccessKey=`` or ``InstrumentationKey=``,
#: a SAS token's ``sig=``. A bare ``sas`` would also hide harmless settings (``...on.sasl``), so SAS
#: settings are matched by their shapes.
SPARK_REDACTION_REGEX = (
    r"(?i)secret|password|token|access[._-]?key|account[._-]?key|storage[._-]?key|instrumentation[._-]?key"
    r"|[.]sas[.]|sas[._-]?(key|token)|sig=|connection[._-]?string"
)

#: Loggers that echo call arguments: py4j logs every command it sends to the JVM at DEBUG, so
#: ``spark.conf.set(<account key conf>, <key>)`` would print the key with the root logger at DEBUG.
ECHOING_LOGGERS = ("py4j", "py4j.clientserver", "py4j.java_gateway")


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
        """A copy of a JSON-like value with every string (keys too) redacted.

        Dicts, lists and tuples come back as new containers: the caller's are never changed.
        """
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.scrub(key): self.scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.scrub(item) for item in value)
        return value


class _SecretLogFilter(logging.Filter):
    """Replaces registered secrets in the records of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.redactor = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's business, not ours
            return True
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def hide_in_logs(*secrets: str) -> None:
    """Redact ``secrets`` from the records of :data:`ECHOING_LOGGERS` from now on, in this process.

    Call it before the secret is handed to Spark: the py4j command carrying it is logged then.
    The filter lives on the loggers themselves, which are process-wide already.
    """
    for name in ECHOING_LOGGERS:
        logger = logging.getLogger(name)
        found = [f for f in logger.filters if isinstance(f, _SecretLogFilter)]
        if found:
            found[0].redactor.add(secrets)
        else:
            log_filter = _SecretLogFilter()
            log_filter.redactor.add(secrets)
            logger.addFilter(log_filter)


def redact_url(url: str) -> str:
    """``url`` with the password of its user part, and its query, replaced by ``[REDACTED]``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    return urlunsplit(parts._replace(netloc=netloc, query=REDACTED if parts.query else ""))
