"""Settings come from the environment; unsafe or unsupported configurations refuse to start."""

from __future__ import annotations

import pytest

from tests.conftest import run_manage, run_python

SETUP = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE','teapot_portal.settings'); django.setup(); from django.conf import settings as s; "

PRODUCTION = {
    "DEBUG": "0",
    "TEAPOT_DEMO": "0",
    "SECRET_KEY": "a-production-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP",
    "ALLOWED_HOSTS": "teapot.example.org",
    "DATABASE_URL": "postgres://teapot:pw@db.invalid:5432/teapot",
    "CELERY_BROKER_URL": "amqp://guest:guest@broker.invalid:5672//",
    "TEAPOT_EMBEDDED_AUTOSTART": "0",
}


def test_missing_secret_key_with_debug_off_refuses_to_start():
    result = run_python(SETUP, env={"DEBUG": "0", "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_local_secret_key_is_generated_once_and_kept(tmp_path):
    env = {"DEBUG": "1", "SECRET_KEY": "", "TEAPOT_VAR_DIR": str(tmp_path)}
    first = run_python(SETUP + "print(s.SECRET_KEY)", env=env)
    second = run_python(SETUP + "print(s.SECRET_KEY)", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only


@pytest.mark.parametrize("url", ["sqlite:///db.sqlite3", "mysql://root@localhost/teapot"])
def test_non_postgresql_database_url_is_refused(url):
    result = run_python(SETUP, env={"DEBUG": "1", "DATABASE_URL": url})
    assert result.returncode != 0
    assert "DATABASE_URL must point at PostgreSQL" in result.stderr


def test_database_url_selects_that_server():
    result = run_python(
        SETUP + "d=s.DATABASES['default']; print(d['HOST'], d['PORT'], d['NAME'], d['TEST']['NAME'])",
        env={"DEBUG": "1", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/teapot_ci"},
    )
    assert result.stdout.split() == ["127.0.0.1", "5432", "teapot_ci", "test_teapot_ci"]


def test_embedded_defaults_use_unix_sockets_under_var(tmp_path):
    result = run_python(
        SETUP + "print(s.DATABASES['default']['HOST']); print(s.CELERY_BROKER_URL)",
        env={"DEBUG": "1", "DATABASE_URL": "", "CELERY_BROKER_URL": "", "TEAPOT_VAR_DIR": str(tmp_path)},
    )
    host, broker = result.stdout.split()
    assert host == str(tmp_path / "pgdata")
    assert broker == f"redis+socket://{tmp_path}/redis/redis.sock"


@pytest.mark.parametrize(
    "broker", ["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"], ids=["redis", "rabbitmq"]
)
def test_broker_url_from_environment(broker):
    result = run_python(SETUP + "print(s.CELERY_BROKER_URL)", env={"DEBUG": "1", "CELERY_BROKER_URL": broker})
    assert result.stdout.strip() == broker


def test_unknown_provisioner_is_refused():
    result = run_python(SETUP, env={"DEBUG": "1", "TEAPOT_PROVISIONER": "openstack"})
    assert result.returncode != 0
    assert "use 'lab' (simulation) or 'kubernetes'" in result.stderr


def test_provisioner_kubernetes_is_read():
    result = run_python(
        SETUP + "print(s.TEAPOT_PROVISIONER, s.TEAPOT_KUBECONFIG)",
        env={"DEBUG": "1", "TEAPOT_PROVISIONER": "kubernetes", "KUBECONFIG": "/etc/teapot/kubeconfig"},
    )
    assert result.stdout.split() == ["kubernetes", "/etc/teapot/kubeconfig"]


def test_production_settings_pass_check_deploy_without_warnings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_oidc_provider_is_configured_from_environment():
    env = {
        "DEBUG": "1",
        "TEAPOT_OIDC_SERVER_URL": "https://sso.example.org/realms/corp",
        "TEAPOT_OIDC_CLIENT_ID": "teapot",
        "TEAPOT_OIDC_CLIENT_SECRET": "s3cr3t",
        "TEAPOT_OIDC_NAME": "Corp SSO",
    }
    result = run_python(
        SETUP
        + "a=s.SOCIALACCOUNT_PROVIDERS['openid_connect']['APPS'][0]; print(a['name'], a['client_id'], a['settings']['server_url'])",
        env=env,
    )
    assert result.stdout.strip() == "Corp SSO teapot https://sso.example.org/realms/corp"


def test_oidc_without_client_credentials_is_refused():
    result = run_python(SETUP, env={"DEBUG": "1", "TEAPOT_OIDC_SERVER_URL": "https://sso.example.org"})
    assert result.returncode != 0
    assert "TEAPOT_OIDC_CLIENT_ID, TEAPOT_OIDC_CLIENT_SECRET" in result.stderr
