"""Keep secrets out of the store, logs and files: every value is cleaned on its way out of the process.

The secrets known to a process are the values of secret-looking environment variables
(`OPENAI_API_KEY`, ...) and every value it registered once it learned it is one: the key read
from the variable a config names (`judge.api_key_env`, whatever its name), the value of a
Prefect Secret block, credentials inside a configured URL. Three nets use them: values under
secret-looking keys in JSON payloads (`api_key`, `Authorization`, ...) are replaced, known
secrets are cut out of every stored string, and log records are scrubbed as they are made.
A key that names where a secret is kept (`judge.api_key_env`, `judge.api_key_secret`) holds a
name, not a secret: its value stays, so a stored config reads back as it was written.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"(api[_-]?key|secret|password|passwd|authorization|(^|[_-])token$|credential)", re.IGNORECASE)
# Keys whose value is the name of an environment variable or of a Prefect Secret block.
SECRET_REFERENCE = re.compile(r"(_env|^api_key_secret)$", re.IGNORECASE)
# Shorter values of secret-looking variables are too likely to occur by chance in ordinary text.
MIN_SECRET_LENGTH = 8
# A registered value is known to be a secret, so it only needs to be long enough not to eat words.
MIN_REGISTERED_LENGTH = 4

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember `value` as a secret: from now on it is cut out of everything stored and logged."""
    if value and len(value) >= MIN_REGISTERED_LENGTH and value not in _registered:
        _registered.add(value)
        _scrub_log_records()


def known_secrets() -> list[str]:
    """Registered secrets and the values of secret-looking environment variables, longest first."""
    values = {
        value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values | _registered, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_payload(value: Any, secrets: list[str]) -> Any:
    """A copy of a JSON-like value with secret-keyed values replaced and secret strings cut out."""
    if isinstance(value, dict):
        return {
            key: REDACTED if _holds_secret(str(key)) and item is not None else redact_payload(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_payload(item, secrets) for item in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


def _holds_secret(key: str) -> bool:
    return bool(SECRET_NAME.search(key)) and not SECRET_REFERENCE.search(key)


def url_credentials(url: str) -> list[str]:
    """What in a URL can be a credential: its user info, password, and query-string values."""
    parts = urlsplit(url)
    found = [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2]]
    return [value for value in found if value]


def redact_url(url: str) -> str:
    """`url` with its user info and query-string values replaced by the redaction marker."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = urlencode([(name, REDACTED) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_base_record_factory = logging.getLogRecordFactory()


def _scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_record_factory(*args, **kwargs)
    secrets = known_secrets()
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a malformed format string: logging reports it when it emits
        return record
    if any(secret in message for secret in secrets):
        record.msg, record.args = scrub_text(message, secrets), None
    return record


def _scrub_log_records() -> None:
    """Every log record made in this process from now on, Prefect's included, carries no known secret."""
    if logging.getLogRecordFactory() is not _scrubbed_record:
        logging.setLogRecordFactory(_scrubbed_record)
