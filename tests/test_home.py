"""The landing page: the last day's status mix, drawn, and the pipeline's health."""

import pytest

from tests import envelopes
from tests.helpers import import_events

pytestmark = pytest.mark.django_db


def test_the_status_mix_counts_the_last_day_of_trades_and_draws_it(client, support_user, tmp_path):
    old = envelopes.trade("settled", transact_id="pt_live_OLD1", reference="old")
    old["data"]["createdAt"] = "2026-06-20T10:00:00Z"  # a week before the rest
    import_events(
        tmp_path,
        old,
        envelopes.trade("settled", transact_id="pt_live_NEW1", reference="a"),
        envelopes.trade("reserved", transact_id="pt_live_NEW2", reference="b"),
    )
    client.force_login(support_user)

    response = client.get("/")

    mix = {s["status"]: s["count"] for s in response.context["statuses"]}
    assert mix == {"reserved": 1, "settled": 1, "failed": 0, "released": 0, "returned": 0}
    page = response.content.decode()
    assert '<rect class="st-settled" x="50.00" y="0" height="6" width="50.00">' in page
    assert "2 trades created in the 24 hours up to the newest" in page


def test_the_landing_page_says_when_the_pipeline_needs_a_look(client, support_user):
    from records.models import RejectedDelivery

    RejectedDelivery.objects.create(status_code=401, reason="x", body_size=1, body_sha256="0" * 64)
    client.force_login(support_user)

    health = client.get("/").content.decode()

    assert "0 events waiting to be processed; 1 webhook request refused in the last hour." in health
