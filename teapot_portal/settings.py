"""Teapot settings: everything from the environment, embedded servers by default.

See docs/configuration.md for every variable. Importing this module does no I/O beyond
reading (or, in DEBUG, creating) ``var/secret_key``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from teapot_portal import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false).")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --------------------------------------------------------------------------- core

DEBUG = env_bool("DEBUG", False)
# Demo mode: seed data with known passwords, demo logins shown on the login page.
TEAPOT_DEMO = env_bool("TEAPOT_DEMO", DEBUG)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY to a long random value "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or set DEBUG=1 for local use."
        )
    # Local use: generated once, kept under var/ so sessions survive restarts.
    path = embedded.var_dir() / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    # third party
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "rest_framework",
    "django_filters",
    "django_htmx",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Teapot
    "teapot_portal",
    "teapot_portal.gateway.lab",
    "tenants",
    "hosts",
    "reservations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "teapot_portal.urls"
WSGI_APPLICATION = "teapot_portal.wsgi.application"
ASGI_APPLICATION = "teapot_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "teapot_portal.context_processors.teapot",
            ],
        },
    },
]

# --------------------------------------------------------------------------- database

# PostgreSQL only: the exclusion constraints, row locks and ranges Teapot relies on have no
# SQLite equivalent, so a non-PostgreSQL DATABASE_URL is refused.
if os.environ.get("DATABASE_URL"):
    _db = dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)
    if _db["ENGINE"] not in {"django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"}:
        raise ImproperlyConfigured(
            "DATABASE_URL must point at PostgreSQL (postgres://user:password@host:5432/dbname); "
            "SQLite and other databases are not supported."
        )
    _db["ENGINE"] = "django.db.backends.postgresql"
else:
    _db = embedded.database_settings()
_db.setdefault("OPTIONS", {})["connect_timeout"] = 10
_db["TEST"] = {"NAME": os.environ.get("TEAPOT_TEST_DATABASE", f"test_{_db['NAME']}")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------- accounts

AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SITE_ID = 1
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

ACCOUNT_ADAPTER = "tenants.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "tenants.adapters.SocialAccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"  # users are invited by operators, their address is known
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
# A private cloud invites its users; self-signup is an explicit operator decision.
TEAPOT_ALLOW_SIGNUP = env_bool("TEAPOT_ALLOW_SIGNUP", False)

# Corporate SSO through OpenID Connect, configured purely from the environment.
TEAPOT_OIDC_SERVER_URL = os.environ.get("TEAPOT_OIDC_SERVER_URL", "")
TEAPOT_SSO_AUTO_SIGNUP = env_bool("TEAPOT_SSO_AUTO_SIGNUP", False)
SOCIALACCOUNT_PROVIDERS: dict = {}
if TEAPOT_OIDC_SERVER_URL:
    _missing = [n for n in ("TEAPOT_OIDC_CLIENT_ID", "TEAPOT_OIDC_CLIENT_SECRET") if not os.environ.get(n)]
    if _missing:
        raise ImproperlyConfigured(f"TEAPOT_OIDC_SERVER_URL is set but {', '.join(_missing)} is not.")
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": os.environ.get("TEAPOT_OIDC_PROVIDER_ID", "sso"),
                "name": os.environ.get("TEAPOT_OIDC_NAME", "Single sign-on"),
                "client_id": os.environ["TEAPOT_OIDC_CLIENT_ID"],
                "secret": os.environ["TEAPOT_OIDC_CLIENT_SECRET"],
                "settings": {
                    "server_url": TEAPOT_OIDC_SERVER_URL,
                    "token_auth_method": os.environ.get("TEAPOT_OIDC_TOKEN_AUTH_METHOD", "client_secret_basic"),
                },
            }
        ],
    }
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True  # an SSO login for a known, verified email logs that user in
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_ONLY = False

# --------------------------------------------------------------------------- email

DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "teapot@localhost")
if os.environ.get("EMAIL_URL"):
    import urllib.parse as _up

    _email = _up.urlsplit(os.environ["EMAIL_URL"])
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _email.hostname or "localhost"
    EMAIL_PORT = _email.port or 25
    EMAIL_HOST_USER = _up.unquote(_email.username or "")
    EMAIL_HOST_PASSWORD = _up.unquote(_email.password or "")
    EMAIL_USE_TLS = _email.scheme == "smtp+tls"
    EMAIL_USE_SSL = _email.scheme == "smtps"
else:
    # Demo and development: emails (password reset, reminders) are printed to the console.
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# --------------------------------------------------------------------------- i18n, static

LANGUAGE_CODE = "en-gb"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "static"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root

# --------------------------------------------------------------------------- security

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads no cookie: the token travels in hx-headers
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("TEAPOT_BEHIND_PROXY", True):
        # TLS ends at the ingress / load balancer in front of gunicorn.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --------------------------------------------------------------------------- API

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "teapot_portal.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Teapot API",
    "DESCRIPTION": "Self-service bare-metal Kubernetes clusters: tenants, hosts, clusters, reservations.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --------------------------------------------------------------------------- Celery

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or embedded.broker_url()
CELERY_TASK_IGNORE_RESULT = True  # results live in PostgreSQL, where pages read them
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves it for another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("TEAPOT_CELERY_QUEUE", "teapot")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict = {
    # Proves beat → broker → worker → database is alive; shown on the dashboard.
    "heartbeat": {"task": "teapot.heartbeat", "schedule": 30.0, "kwargs": {"source": "beat"}},
    # The lab's simulated controllers (a no-op unless TEAPOT_PROVISIONER=lab); overlapping runs are safe.
    "lab-tick": {"task": "teapot.lab.tick", "schedule": 5.0, "options": {"expires": 10}},
    # Hosts mirrored from BareMetalHosts: a watch that follows changes, and a full resync that
    # catches whatever a watch could miss (level-triggered). Both skip when a run is in progress.
    "hosts-follow": {
        "task": "teapot.hosts.follow",
        "schedule": 10.0,
        "kwargs": {"timeout_seconds": 8},
        "options": {"expires": 10},
    },
    "hosts-resync": {"task": "teapot.hosts.resync", "schedule": 300.0, "options": {"expires": 300}},
    # Trait labels (teapot.io/trait-<name>) onto the BareMetalHosts wherever they differ.
    "hosts-trait-labels": {"task": "teapot.hosts.trait-labels", "schedule": 60.0, "options": {"expires": 60}},
    # Clusters and node pools: every live one reconciled (allocate, label, apply, follow, release,
    # pre-empt after notice). Services also queue a reconcile after each change.
    "tenants-reconcile": {"task": "teapot.tenants.reconcile", "schedule": 10.0, "options": {"expires": 10}},
    # Reservations: prepare at start − lead, activate at the start, remind before the end,
    # complete at the end, complete short host plans (reservations.lifecycle).
    "reservations-reconcile": {"task": "teapot.reservations.reconcile", "schedule": 10.0, "options": {"expires": 10}},
    "tenants-purge-idempotency-keys": {
        "task": "teapot.tenants.purge-idempotency-keys",
        "schedule": 3600.0,
        "options": {"expires": 3600},
    },
}
if TEAPOT_DEMO:
    # The demo bookings wait for the demo fleet to be inspected (reservations.demo); idempotent.
    CELERY_BEAT_SCHEDULE["reservations-demo-seed"] = {
        "task": "teapot.reservations.demo-seed",
        "schedule": 30.0,
        "options": {"expires": 30},
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(embedded.var_dir() / "celerybeat-schedule")
CELERY_TIMEZONE = TIME_ZONE

# --------------------------------------------------------------------------- Teapot

# Which management-cluster gateway to use: the lab simulation (default) or a real cluster.
TEAPOT_PROVISIONER = os.environ.get("TEAPOT_PROVISIONER", "lab")
if TEAPOT_PROVISIONER not in {"lab", "kubernetes"}:
    raise ImproperlyConfigured(f"TEAPOT_PROVISIONER={TEAPOT_PROVISIONER!r}: use 'lab' (simulation) or 'kubernetes'.")
TEAPOT_KUBECONFIG = os.environ.get("KUBECONFIG", "")  # empty: in-cluster service account
TEAPOT_NAMESPACE = os.environ.get("TEAPOT_NAMESPACE", "teapot")
TEAPOT_LAB_SPEED = float(os.environ.get("TEAPOT_LAB_SPEED", "1"))
# Control-plane VIPs Teapot hands out to tenant clusters (ranges and CIDRs, comma-separated);
# the load balancer (e.g. MetalLB) must announce the same pool.
TEAPOT_CONTROL_PLANE_ADDRESSES = os.environ.get("TEAPOT_CONTROL_PLANE_ADDRESSES", "192.0.2.10-192.0.2.250")
# Failure-domain levels, coarsest first (locations are paths along them).
TEAPOT_TOPOLOGY_LEVELS = env_list("TEAPOT_TOPOLOGY_LEVELS", "site,room,row,rack")
# Upstream CRD schemas objects are validated against (tests, the lab, export_manifests).
TEAPOT_CRD_DIR = Path(os.environ.get("TEAPOT_CRD_DIR", BASE_DIR.parent / "shared" / "crds"))

# --------------------------------------------------------------------------- logging

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = os.environ.get("LOG_FORMAT", "logfmt")  # or "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "teapot_portal.logging.RedactSecretsFilter"}},
    "formatters": {
        "logfmt": {"()": "teapot_portal.logging.LogfmtFormatter"},
        "json": {"()": "teapot_portal.logging.JsonFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT if LOG_FORMAT in {"logfmt", "json"} else "logfmt",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Redacted at the source too: runserver's lines and Django's request log quote paths, and
        # some paths are secrets (a calendar feed's address); their warnings reach stderr as well.
        "django.server": {"level": "INFO", "filters": ["redact"]},
        "django.request": {"filters": ["redact"]},
        "pgserver": {"level": "WARNING"},
        # One line per task run drowns everything else (the lab ticks every 5 s); failures still log.
        "celery.app.trace": {"level": os.environ.get("CELERY_TRACE_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": os.environ.get("CELERY_TRACE_LOG_LEVEL", "WARNING")},
        "kubernetes": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
