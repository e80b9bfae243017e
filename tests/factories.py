"""Thin factories for rows that tests make directly.

0Pools records never come from a factory: tests send them through the one
pipeline (``tests.envelopes`` + ``import_events`` or the webhook), as
production does. Users and action runs are the panel's own rows.
"""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts.permissions import Action
from actions.models import Run


class UserFactory(factory.django.DjangoModelFactory):
    """A user holding ``role`` (a group name), or no role at all with ``role=None``."""

    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user-{n}")
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def role(self, create, role, **kwargs):
        if create and role:
            self.groups.set([Group.objects.get_or_create(name=role)[0]])


class ScheduledRunFactory(factory.django.DjangoModelFactory):
    """A run the beat's scheduled re-poll made (no user)."""

    class Meta:
        model = Run

    key = factory.Sequence(lambda n: f"schedule-{n}")
    action = Action.BULK_REPOLL
    target = "3 stuck trades (scheduled)"
    params = factory.LazyFunction(lambda: {"scheduled": True, "targets": []})


class RunFactory(factory.django.DjangoModelFactory):
    """A re-poll someone confirmed; ``user`` is required."""

    class Meta:
        model = Run

    key = factory.Sequence(lambda n: f"run-key-{n:012d}")
    action = Action.TRADE_REPOLL
    target = factory.Sequence(lambda n: f"pt_live_RUN{n:03d}")
    reason = "ticket 12"
    state = Run.State.DONE
