"""Settings for the Ops Panel, read from the environment.

One module for every environment. The names below are the interface that
deployments and scripts use (see README "Configuration").
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=None):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=""):
    return [item for item in os.environ.get(name, default).replace(",", " ").split() if item]


DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("OPSPANEL_TESTING", False)

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production refuses to start without it; "
            "set DEBUG=1 for a local run (make run does)."
        )
    SECRET_KEY = "insecure-local-only-key"  # noqa: S105 - DEBUG/test only, refused in production

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost 127.0.0.1 [::1]" if (DEBUG or TESTING) else "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_filters",
    "template_partials",
    "pgtrigger",
    "axes",
    "csp",
    "records",
    "lib",
    "ingest",
    "accounts",
    "lookup",
    "timeline",
    "browse",
    "audit",
    "partners",
    "actions",
    "queues",
    "deliveries",
    "reconciliation",
    "team",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The webhook, the key check and /healthz: straight to their views, past
    # the page middleware below (no session, user, CSRF, CSP or framing).
    "lib.middleware.MachineEndpointsMiddleware",
    "lib.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # PostgreSQL known to be away: 503 at once, before anything reads it.
    "lib.middleware.DatabaseAwayMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "lib.middleware.RefuseNulMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's, with the user read in the session's statement (accounts.sessions).
    "accounts.middleware.AuthenticationMiddleware",
    "accounts.middleware.IdleTimeoutMiddleware",
    "accounts.middleware.NoStoreMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Inside the session, user and messages: a bare error answer (an empty
    # 405) becomes the panel's page of its status.
    "lib.errors.ErrorPagesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it answers a locked-out sign-in with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "opspanel.urls"
WSGI_APPLICATION = "opspanel.wsgi.application"

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
                "lib.csrf.csrf",  # one masked token per response (lib/csrf.py)
            ],
        },
    },
    {
        # The hot tables only (opspanel/jinja2.py says why); always named
        # with ``using="jinja2"``.
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "NAME": "jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
        "OPTIONS": {
            "environment": "opspanel.jinja2.environment",
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "lib.csrf.csrf",
            ],
        },
    },
]
# Form widgets drawn by Jinja2 too (Django ships the same widget templates
# for both engines): a list's filter form was a third of its page.
FORM_RENDERER = "django.forms.renderers.Jinja2"

# Database: DATABASE_URL, or the embedded PostgreSQL that `make run` starts
# (scripts/dev.py exports DATABASE_URL before Django starts).
DATABASE_URL = env("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. `make run` / `make test` start an embedded "
        "PostgreSQL and set it for you; otherwise point it at PostgreSQL."
    )
_db = dj_database_url.parse(DATABASE_URL)
_db.setdefault("OPTIONS", {})
_db["CONN_MAX_AGE"] = 0  # the psycopg pool keeps connections, not Django
# Check each connection as it is handed out (with the pool: psycopg_pool's
# ``check``): after PostgreSQL restarts, a dead one is replaced, not used.
# The engine is Django's PostgreSQL backend with a pool whose check makes no
# round trip for a connection in use a second ago unless the server spoke on
# it meanwhile (lib/pool.py).
if _db["ENGINE"] == "django.db.backends.postgresql":
    _db["ENGINE"] = "lib.postgresql"
_db["CONN_HEALTH_CHECKS"] = True
# While the database is away a request fails within seconds (lib/database.py
# answers it 503 with Retry-After), instead of waiting on a connection.
_db["OPTIONS"].setdefault("connect_timeout", 2)
# Prepared statements: values bound by the server, and a statement run a
# few times on a connection is planned once (psycopg's prepare_threshold,
# which Django turns off for the sake of transaction-mode poolers). Planning
# was a third to a half of PostgreSQL's time on the hot pages
# (docs/decisions.md, "Prepared statements"). Off behind a pooler that
# cannot carry them: DATABASE_PREPARED_STATEMENTS=0, which is the default
# when the panel's own pool is off (DATABASE_POOL_DISABLED: behind PgBouncer,
# where a statement prepared on one server connection may run on another).
_pooled = not env_bool("DATABASE_POOL_DISABLED", False)
if env_bool("DATABASE_PREPARED_STATEMENTS", _pooled):
    _db["OPTIONS"].setdefault("server_side_binding", True)
    _db["OPTIONS"].setdefault("prepare_threshold", 5)
if _pooled:
    _db["OPTIONS"]["pool"] = {
        "min_size": int(env("DATABASE_POOL_MIN", "1")),
        "max_size": int(env("DATABASE_POOL_MAX", "10")),
        "timeout": float(env("DATABASE_POOL_TIMEOUT", "2")),
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username+address before a password is checked.
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, reading the user and their role in one query.
    "accounts.backends.RoleModelBackend",
]
# Sign-in throttling: 5 failures for one username from one address lock that
# pair out for 15 minutes. Off in tests except the test that shows it.
AXES_ENABLED = not TESTING
AXES_FAILURE_LIMIT = int(env("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# A locked-out sign-in gets the panel's 429 page, not a bare line of text.
AXES_LOCKOUT_CALLABLE = "lib.errors.locked_out"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
# Database sessions (Django's table and rules), read with one plain SQL
# statement: see accounts/sessions.py and docs/decisions.md.
SESSION_ENGINE = "accounts.sessions"
SESSION_COOKIE_AGE = int(env("SESSION_IDLE_SECONDS", str(30 * 60)))
# The age above is an idle timeout: accounts.middleware.IdleTimeoutMiddleware
# extends it on every request a person makes, but not on htmx polling (a
# live timeline left open in a tab is not a person at work).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not (DEBUG or TESTING)
CSRF_COOKIE_SECURE = not (DEBUG or TESTING)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Behind a proxy that ends TLS: trust its X-Forwarded-Proto, and name the
# origins forms are posted from (else every POST fails the CSRF check).
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "0"))
# Content Security Policy (django-csp): everything from our own origin, no
# inline script or style, no eval (htmx runs with allowEval false, see
# templates/base.html), no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
X_FRAME_OPTIONS = "DENY"
# A form whose CSRF token did not match: the panel's 403 page, in words.
CSRF_FAILURE_VIEW = "lib.errors.csrf_failure"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / ".data" / "static"
# Locally and in tests whitenoise serves straight from static/ (no collectstatic).
WHITENOISE_USE_FINDERS = True
# Autorefresh re-reads static/ on every request: for editing CSS locally only.
# Tests serve from the finders with the file list built once (no collectstatic,
# so no STATIC_ROOT for whitenoise to look in).
WHITENOISE_AUTOREFRESH = DEBUG
if TESTING:
    STATIC_ROOT = None

# Celery. Unset broker: the same PostgreSQL through kombu's SQLAlchemy
# transport, so a bare laptop needs no broker server.
CELERY_BROKER_URL = env("CELERY_BROKER_URL") or "sqla+" + DATABASE_URL.replace(
    "postgres://", "postgresql+psycopg://", 1
).replace("postgresql://", "postgresql+psycopg://", 1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Only for Redis (the SQLAlchemy transport hands these options to create_engine):
# - visibility_timeout: an unacknowledged task is redelivered after this long,
#   longer than any task;
# - socket_timeout: a command waits this long for its answer. Without it a
#   broker that stops answering without closing the connection (a failover,
#   a NAT or firewall dropping it) holds a publish forever, and with it the
#   thread that sends a web process's webhook batches: every later event of
#   that process would wait for the sweep. With it the send fails, sends
#   pause (lib.tasks) and the sweep applies what was stored. A worker's BRPOP
#   is kombu's own and is checked by health_check_interval, not this.
# - socket_connect_timeout, socket_keepalive: the same for a connect, and for
#   a connection that dies idle.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "visibility_timeout": 3600,
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
    }
    if CELERY_BROKER_URL.startswith("redis")
    else {}
)
# A redis:// broker: kombu's Redis transport, keeping one client per channel
# instead of building one per publish (lib/broker.py says why).
if CELERY_BROKER_URL.startswith("redis://"):
    CELERY_BROKER_TRANSPORT = "lib.broker:Transport"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A webhook must answer even when the broker is away (the sweep catches up):
# give up publishing quickly instead of holding the request.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TASK_IGNORE_RESULT = True
# The queue the panel sends its tasks to and its workers consume: one
# broker can serve several deployments (or a bench beside the tests), each
# with a queue of its own.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", "celery")
if TESTING and not env("CELERY_TASK_DEFAULT_QUEUE"):
    # Test processes running side by side (pytest-xdist) share one broker:
    # each sends to, and its worker consumes, a queue of its own.
    CELERY_TASK_DEFAULT_QUEUE = "opspanel-test-" + env("PYTEST_XDIST_WORKER", "main")
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-events": {
        "task": "ingest.tasks.sweep_pending_events",
        "schedule": float(env("OPOOLS_SWEEP_SECONDS", "30")),
    },
    "repoll-stuck-trades": {
        "task": "queues.tasks.repoll_stuck_trades",
        "schedule": float(env("OPOOLS_STUCK_REPOLL_SECONDS", "300")),
    },
    "resume-stalled-runs": {
        "task": "actions.tasks.resume_stalled_runs",
        "schedule": 300.0,
    },
    "close-finished-days": {
        "task": "reconciliation.tasks.close_finished_days",
        "schedule": 900.0,
    },
}
# The daily close: a day is closed this long after it ends (late records land
# first), and the beat catches up on this many days it missed.
OPSPANEL_CLOSE_GRACE_MINUTES = int(env("OPSPANEL_CLOSE_GRACE_MINUTES", "30"))
OPSPANEL_CLOSE_CATCH_UP_DAYS = int(env("OPSPANEL_CLOSE_CATCH_UP_DAYS", "7"))

# 0Pools
OPOOLS_WEBHOOK_SECRETS = env_list("OPOOLS_WEBHOOK_SECRETS")
OPOOLS_API_URL = env("OPOOLS_API_URL", "")
OPOOLS_API_KEY = env("OPOOLS_API_KEY", "")
# Seconds to wait for one answer of the status API (each try).
OPOOLS_API_TIMEOUT = float(env("OPOOLS_API_TIMEOUT", "5"))
# Refused webhook requests recorded per sender address and minute.
OPOOLS_REJECTED_PER_MINUTE = int(env("OPOOLS_REJECTED_PER_MINUTE", "60"))
# Largest webhook body accepted; larger is a 413 before anything is parsed.
OPOOLS_WEBHOOK_MAX_BYTES = 256 * 1024
# Seconds a webhook sender may pause while sending its body (each read).
OPOOLS_WEBHOOK_READ_SECONDS = float(env("OPOOLS_WEBHOOK_READ_SECONDS", "5"))
# Seconds a web process gathers stored webhook events before it sends them
# to the worker as one task (ingest.tasks.apply_batches): how much later an
# event is applied, for one publish per batch instead of one per event.
OPOOLS_WEBHOOK_LINGER_SECONDS = float(env("OPOOLS_WEBHOOK_LINGER_SECONDS", "0.05"))
# Replays may go to private and loopback addresses only when this is on
# (tests and the sandbox); production partner endpoints are public.
OPOOLS_OUTBOUND_ALLOW_PRIVATE = env_bool("OPOOLS_OUTBOUND_ALLOW_PRIVATE", DEBUG)
# Guarded actions a user may start per minute.
OPSPANEL_ACTIONS_PER_MINUTE = int(env("OPSPANEL_ACTIONS_PER_MINUTE", "20"))
# A pending event younger than this is left to its own task by the sweep.
OPOOLS_SWEEP_GRACE_SECONDS = int(env("OPOOLS_SWEEP_GRACE_SECONDS", "20"))

# Partners (partners/): Fernet keys that encrypt webhook signing secrets at
# rest, newest first (MultiFernet); a fixed, public key with DEBUG or in
# tests only (``check --deploy`` refuses it: partners.E001).
OPSPANEL_SECRET_KEYS = env_list("OPSPANEL_SECRET_KEYS") or (
    ["b3BzcGFuZWwtZGV2LW9ubHktbm90LWEtc2VjcmV0ISE="] if (DEBUG or TESTING) else []
)
# Bearer tokens the 0Pools network presents to POST /internal/keys/verify
# (several during rotation); none: every verification is refused.
OPSPANEL_VERIFY_TOKENS = env_list("OPSPANEL_VERIFY_TOKENS")
# How long a password re-entry (sudo mode) covers key and secret operations.
OPSPANEL_SUDO_SECONDS = int(env("OPSPANEL_SUDO_SECONDS", "600"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # httpx logs every request line at INFO; our own code logs what matters.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
