"""Reads of delivery health that more than one page needs (the landing page,
``/deliveries/``): chainable on the models' managers."""

from django.apps import apps
from django.db import models
from django.db.models import Case, Count, Exists, F, Max, Min, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce

# A partner is failing when this many of its latest delivery attempts in a
# row failed (or none of its attempts ever succeeded): see docs/decisions.md.
FAILING_STREAK = 5


class PartnerQuerySet(models.QuerySet):
    def with_delivery_state(self):
        """Each partner with ``newest_attempt`` (its newest delivery attempt, any
        age), ``failing_now`` and, when failing, ``failing_since`` (its first
        attempt after its last success).

        Failing now: its last ``FAILING_STREAK`` attempts (any source) all
        failed, or every attempt it ever had failed. Clock-free on purpose: a
        successful attempt (a recovery replay, or 0Pools getting through) is
        what takes a partner off the list, not an hour passing; and a quiet
        partner is not called healthy. Each subquery is a short scan of
        ``delivery_partner_time_idx``.
        """
        # The model is defined after this queryset, in records.models.
        DeliveryAttempt = apps.get_model("records", "DeliveryAttempt")
        attempts = DeliveryAttempt.objects.filter(partner=OuterRef("pk"))
        newest_first = attempts.order_by("-attempted_at", "-id").values("attempted_at")
        oldest_first = attempts.order_by("attempted_at", "id").values("attempted_at")
        return self.annotate(
            newest_attempt=Subquery(newest_first[:1]),
            last_succeeded=Subquery(
                newest_first.filter(outcome=DeliveryAttempt.Outcome.SUCCEEDED)[:1]
            ),
            streak_reaches=Subquery(newest_first[FAILING_STREAK - 1 : FAILING_STREAK]),
        ).annotate(
            failing_now=Case(
                When(
                    Q(newest_attempt__isnull=False, last_succeeded__isnull=True)
                    | Q(streak_reaches__gt=F("last_succeeded")),
                    then=True,
                ),
                default=False,
            ),
            failing_since=Case(
                When(
                    failing_now=True,
                    then=Coalesce(
                        Subquery(
                            oldest_first.filter(attempted_at__gt=OuterRef("last_succeeded"))[:1]
                        ),
                        Subquery(oldest_first[:1]),
                    ),
                )
            ),
        )

    def failing_deliveries(self):
        """The partners ``with_delivery_state`` calls failing now."""
        return self.with_delivery_state().filter(failing_now=True)


class DeliveryAttemptQuerySet(models.QuerySet):
    def unanswered(self):
        """Failed attempts that no success of the same event followed.

        An event is failing when its latest attempt (by ``attempted_at``, then
        id) failed; its unanswered attempts are then its failures since its
        last success (all of them if it never had one), and the first of them
        is when it started failing. Events whose latest attempt succeeded have
        none. The check per attempt is a lookup on the ``event_id`` index.
        """
        later_success = self.model.objects.filter(
            Q(attempted_at__gt=OuterRef("attempted_at"))
            | Q(attempted_at=OuterRef("attempted_at"), pk__gt=OuterRef("pk")),
            event_id=OuterRef("event_id"),
            outcome=self.model.Outcome.SUCCEEDED,
        )
        return self.filter(~Exists(later_success), outcome=self.model.Outcome.FAILED)

    def failing_events(self):
        """One row per failing event: ``event_id``, ``failing_since`` (its first
        unanswered failure), ``last_failed`` and ``failures`` (how many)."""
        return (
            self.unanswered()
            .values("event_id")
            .annotate(
                failing_since=Min("attempted_at"),
                last_failed=Max("attempted_at"),
                failures=Count("id"),
            )
            .order_by()
        )
