"""Logs are structured (logfmt or JSON) and never carry secrets."""

from __future__ import annotations

import json
import logging

import pytest

from teapot_portal.logging import JsonFormatter, LogfmtFormatter, RedactSecretsFilter, redact


def _record(msg, *args, **extra):
    record = logging.LogRecord("teapot.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_logfmt_is_greppable_key_value():
    line = LogfmtFormatter().format(_record("host %s enrolled", "node-1", tenant="physics"))
    assert line.startswith("ts=")
    assert "level=INFO logger=teapot.test" in line
    assert 'msg="host node-1 enrolled"' in line
    assert "tenant=physics" in line


def test_json_lines_parse():
    data = json.loads(JsonFormatter().format(_record("hello", host="node-2")))
    assert data["msg"] == "hello" and data["host"] == "node-2" and data["level"] == "INFO"


@pytest.mark.parametrize(
    "text, secret",
    [
        ("login with password=hunter2 failed", "hunter2"),
        ('{"password": "hunter2"}', "hunter2"),
        ("Authorization: Token tpt_abcdefghijklmnop", "tpt_abcdefghijklmnop"),
        ("broker amqp://guest:hunter2@rabbit:5672//", "hunter2"),
        ("bmc redfish://admin:hunter2@10.0.0.1/redfish/v1", "hunter2"),
        ("client_secret=abc123def", "abc123def"),
    ],
)
def test_secrets_are_redacted(text, secret):
    assert secret not in redact(text)


def test_filter_redacts_formatted_arguments():
    record = _record("connecting with %s", "password=hunter2")
    RedactSecretsFilter().filter(record)
    assert "hunter2" not in LogfmtFormatter().format(record)
