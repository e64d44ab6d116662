"""Structured, greppable logs on stdout: logfmt by default (``key=value``), JSON on request.

Every record passes :class:`RedactSecretsFilter`, so a password, token or kubeconfig that
slips into a message is masked before it is written anywhere; the formatters mask the extra
fields too (Django's request log carries the request, whose repr has the path). Some URLs are
secrets themselves — a calendar feed's ``/calendar/<token>.ics`` — and are written
``/calendar/***.ics``, here and in gunicorn's access log (:class:`RedactingGunicornLogger`).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

# key=value, key: value, "key": "value" where the key names a secret.
_SECRET_KV = re.compile(
    r"""(?ix)
    (?P<key>["']?(?:password|passwd|secret|token|api[_-]?key|authorization|
              client[_-]?secret|kubeconfig|bearer)["']?)
    (?P<sep>\s*[:=]\s*|\s+)
    (?P<value>"[^"]*"|'[^']*'|(?:token|bearer)\s+\S+|[^\s,;}&]+)
    """
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_TEAPOT_TOKEN = re.compile(r"\btpt_[A-Za-z0-9_-]{8,}")
# A calendar feed's address is its secret (reservations.feeds).
_FEED_PATH = re.compile(r"/calendar/[^/\s\"'?#]+?\.ics")


def redact(text: str) -> str:
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _TEAPOT_TOKEN.sub("tpt_***", text)
    text = _FEED_PATH.sub("/calendar/***.ics", text)
    return _SECRET_KV.sub(lambda m: f"{m['key']}{m['sep']}***", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _fields(record: logging.LogRecord) -> dict:
    fields = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            fields[key] = _redacted(value)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        fields["exc"] = record.exc_text
    return fields


def _redacted(value: object) -> object:
    """An extra field as written: text (or an object's repr, as a request's) redacted; numbers,
    booleans and structures as they are."""
    if value is None or isinstance(value, bool | int | float | dict | list | tuple):
        return value
    return redact(str(value))


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


try:  # gunicorn is the production web server; runserver and the tests do without it
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # pragma: no cover
    _GunicornLogger = object


class RedactingGunicornLogger(_GunicornLogger):
    """gunicorn's logger (``--logger-class``) with secret paths masked in the access log: the
    request line, path, query, referer and every header or environ atom pass :func:`redact`."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}
