"""Start-up guards: what the panel refuses to start with."""

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.checks import run_checks

from tests.conftest import SECRET


def _manage_check(env, *options):
    return subprocess.run(
        [sys.executable, "manage.py", "check", *options],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", **env},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage_check({})

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_starts_with_a_secret_key():
    result = _manage_check({"SECRET_KEY": "x" * 50, "OPOOLS_WEBHOOK_SECRETS": SECRET})

    assert result.returncode == 0, result.stderr


def test_a_malformed_webhook_secret_is_caught_at_start_up(settings):
    settings.OPOOLS_WEBHOOK_SECRETS = [SECRET, "whsec_not base64!", "sk_live_wrongkind"]

    errors = [m for m in run_checks() if m.id == "ingest.E001"]

    assert [e.msg for e in errors] == [
        "OPOOLS_WEBHOOK_SECRETS entry #2 is not valid base64 after whsec_.",
        "OPOOLS_WEBHOOK_SECRETS entry #3 does not start with whsec_.",
    ]


def test_every_setting_read_from_the_environment_is_in_the_readme():
    import re

    source = (settings.BASE_DIR / "opspanel" / "settings.py").read_text()
    read = set(re.findall(r'env(?:_bool|_list)?\("([A-Z0-9_]+)"', source))
    readme = (settings.BASE_DIR / "README.md").read_text()
    # Set by pytest-xdist for each test process, not by anyone deploying.
    undocumented = {name for name in read - {"PYTEST_XDIST_WORKER"} if f"`{name}`" not in readme}

    assert read, "the pattern no longer finds the settings"
    assert undocumented == set()


PRODUCTION = {
    "SECRET_KEY": "a-production-secret-key-" + "x" * 40,
    "OPOOLS_WEBHOOK_SECRETS": SECRET,
    "ALLOWED_HOSTS": "panel.example",
    "OPSPANEL_SECRET_KEYS": "bm90LXRoZS1kZXYta2V5LWEtcHJvZHVjdGlvbi1vbmU=",
    "OPSPANEL_VERIFY_TOKENS": "a-production-verify-token-" + "y" * 40,
}


def test_check_deploy_warns_only_about_the_two_tls_settings_the_readme_explains():
    result = _manage_check(PRODUCTION, "--deploy")
    warned = set(re.findall(r"\((security\.[A-Z]\d+)\)", result.stderr + result.stdout))

    assert warned == {"security.W004", "security.W008"}
    readme = (settings.BASE_DIR / "README.md").read_text()
    assert "check --deploy" in readme and "W004" in readme and "W008" in readme


def test_with_tls_redirect_and_hsts_set_only_the_domain_wide_hsts_choices_remain():
    tls = {"SECURE_SSL_REDIRECT": "1", "SECURE_HSTS_SECONDS": "31536000"}

    result = _manage_check(PRODUCTION | tls, "--deploy")
    warned = set(re.findall(r"\((security\.[A-Z]\d+)\)", result.stderr + result.stdout))

    assert result.returncode == 0, result.stderr
    assert warned == {"security.W005", "security.W021"}
    readme = (settings.BASE_DIR / "README.md").read_text()
    assert "W005" in readme and "W021" in readme


def test_gunicorn_runs_threaded_workers_that_freeze_what_they_loaded():
    """gunicorn.conf.py, which `gunicorn opspanel.wsgi` reads from the repository root."""
    import gc
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
    spec = importlib.util.spec_from_file_location("gunicorn_conf", path)
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert (conf.worker_class, conf.threads) == ("gthread", 4)

    before = gc.get_freeze_count()
    try:
        conf.post_worker_init(worker=None)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


@pytest.mark.django_db
def test_a_statement_run_often_is_prepared_and_its_values_bound_by_the_server():
    from django.db import connection

    from records.models import Partner

    for _ in range(6):
        assert not Partner.objects.filter(partner_id="ptn_nobody").exists()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            ['%FROM "records_partner"%'],
        )
        prepared = [row[0] for row in cursor.fetchall()]
    # Server-side binding: the value is a parameter ($1), not a literal.
    assert any("$1" in statement and "ptn_nobody" not in statement for statement in prepared)


def test_prepared_statements_are_off_by_default_behind_an_outside_pool():
    """Without the panel's pool (PgBouncer in front), a statement prepared on
    one server connection could run on another: off unless asked for."""
    code = (
        "from django.conf import settings; o = settings.DATABASES['default']['OPTIONS'];"
        "print(o.get('prepare_threshold'), o.get('server_side_binding'), 'pool' in o)"
    )

    def options(**env):
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            env={**os.environ, **env}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split()[-3:]

    assert options(DATABASE_POOL_DISABLED="1") == ["None", "None", "False"]
    assert options(DATABASE_POOL_DISABLED="1", DATABASE_PREPARED_STATEMENTS="1") == [
        "5",
        "True",
        "False",
    ]
    assert options() == ["5", "True", "True"]
