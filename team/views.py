"""``/team/``: the panel's users, their role and last sign-in (admins only)."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import Action, Read, require
from accounts.roles import ROLES, role_of
from accounts.sudo import in_sudo, require_sudo
from lib.errors import found_or_404

from . import services

REASON = {"max_length": 1000, "error_messages": {"required": "A reason is required."}}


class CreateForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{1,150}$", max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])
    reason = forms.CharField(**REASON)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])
    reason = forms.CharField(**REASON)


class ReasonForm(forms.Form):
    reason = forms.CharField(**REASON)


def _page(request, status=200, refusal="", form=None):
    users = get_user_model().objects.prefetch_related("groups").order_by("-is_active", "username")
    rows = [{"user": u, "role": role_of(u)} for u in users]
    context = {
        "rows": rows,
        "roles": ROLES,
        "sudo": in_sudo(request),
        "refusal": refusal,
        "form": form or CreateForm(),
    }
    return render(request, "team/list.html", context, status=status)


def _errors(form):
    return "; ".join(e for errors in form.errors.values() for e in errors)


@require(Read.TEAM)
@require_GET
def team(request):
    return _page(request)


@require(Action.TEAM_CREATE)
@require_POST
@require_sudo
def create(request):
    form = CreateForm(request.POST)
    if not form.is_valid():
        return _page(request, 400, _errors(form), form)
    data = form.cleaned_data
    try:
        services.create(
            request.user, data["username"], data["password"], data["role"], data["reason"]
        )
    except services.Refused as refused:
        return _page(request, refused.status, str(refused), form)
    messages.success(request, f"{data['username']} created with role {data['role']}.")
    return redirect("team:list")


def _user(pk):
    return found_or_404(get_user_model().objects.all(), "No such user.", pk=pk)


@require(Action.TEAM_ROLE)
@require_POST
@require_sudo
def role(request, pk):
    user = _user(pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _page(request, 400, _errors(form))
    try:
        changed = services.change_role(
            request.user, user, form.cleaned_data["role"], form.cleaned_data["reason"]
        )
    except services.Refused as refused:
        return _page(request, refused.status, str(refused))
    if changed:
        messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']}.")
    return redirect("team:list")


@require(Action.TEAM_DEACTIVATE)
@require_POST
@require_sudo
def deactivate(request, pk):
    user = _user(pk)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        return _page(request, 400, _errors(form))
    try:
        services.deactivate(request.user, user, form.cleaned_data["reason"])
    except services.Refused as refused:
        return _page(request, refused.status, str(refused))
    messages.success(
        request, f"{user.get_username()} deactivated: signed out and refused at sign-in."
    )
    return redirect("team:list")
