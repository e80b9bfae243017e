"""The bench's settings: the product's, plus django.contrib.admin.

The product has no admin; the bench needs a real ``ModelAdmin`` for its
baselines (bench/admin.py), so the admin app is installed here and only here.
"""

from opspanel.settings import *  # noqa: F403
from opspanel.settings import INSTALLED_APPS, TEMPLATES

if "django.contrib.admin" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.admin"]
_processors = TEMPLATES[0].setdefault("OPTIONS", {}).setdefault("context_processors", [])
for _needed in (
    "django.template.context_processors.request",
    "django.contrib.auth.context_processors.auth",
    "django.contrib.messages.context_processors.messages",
):
    if _needed not in _processors:
        _processors.append(_needed)
# The admin's pages are never served: the bench calls changelist_view directly.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
ROOT_URLCONF = "bench.urls"
