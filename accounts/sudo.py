"""Sudo mode: an admin types their password again before a sensitive change
(API keys, signing secrets, the team), unless they did so in the last
``OPSPANEL_SUDO_SECONDS`` (healthchecks' ``require_sudo_mode``).

The time of the last re-entry is kept in the session. A POST without it
answers a password form that carries the POST's other fields along, so the
change goes through in one more step, not from the start. The password is
checked by ``authenticate`` (sign-in throttling counts the failures).
"""

import time
from functools import wraps

from django.conf import settings
from django.contrib.auth import authenticate
from django.shortcuts import render

SESSION_KEY = "opspanel_sudo_at"
PASSWORD_FIELD = "sudo_password"  # noqa: S105 - a form field name
# Never echoed back into a page: the CSRF token is fresh, passwords are retyped.
CARRIED_NOT = {"csrfmiddlewaretoken", PASSWORD_FIELD, "password"}


def in_sudo(request):
    at = request.session.get(SESSION_KEY)
    return at is not None and 0 <= time.time() - at < settings.OPSPANEL_SUDO_SECONDS


def enter(request, password):
    """Whether ``password`` is the signed-in user's; starts the window if so."""
    user = authenticate(request, username=request.user.get_username(), password=password)
    if user is None or user.pk != request.user.pk:
        return False
    request.session[SESSION_KEY] = time.time()
    return True


def require_sudo(view):
    """Inside ``require(...)``: only a POST is guarded (a GET changes nothing)."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if request.method != "POST" or in_sudo(request):
            return view(request, *args, **kwargs)
        password = request.POST.get(PASSWORD_FIELD)
        if password and enter(request, password):
            return view(request, *args, **kwargs)
        carried = [
            (name, value)
            for name, values in request.POST.lists()
            if name not in CARRIED_NOT
            for value in values
        ]
        context = {"carried": carried, "action": request.path, "wrong": bool(password)}
        return render(request, "accounts/sudo.html", context, status=403 if password else 200)

    guarded.sudo = True
    return guarded
