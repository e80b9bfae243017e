"""One masked CSRF token per response (lib/csrf.py), for both template engines."""

import re

import pytest
from django.test import Client

from queues.models import Claim
from tests.test_queue import QUEUE, queue_data  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

TOKENS = re.compile(r'(?:csrfmiddlewaretoken" value=|X-CSRFToken": )"([^"]+)"')


def test_every_token_of_a_page_is_the_same_mask_and_the_next_page_gets_another(
    operations_user,
    queue_data,  # noqa: F811
):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operations_user)

    first = TOKENS.findall(browser.get(QUEUE).content.decode())
    second = TOKENS.findall(browser.get(QUEUE).content.decode())

    # The layout's header and sign-out form (Django), the bulk form and each
    # row's claim form (Jinja2): one masked token for all of them.
    assert len(first) >= 8
    assert len(set(first)) == 1
    assert len(set(second)) == 1
    assert first[0] != second[0]  # masked anew for every response (BREACH)

    # And it is a good token: the claim goes through with it.
    answer = browser.post(
        f"{QUEUE}/pt_live_Q01/claim", {"csrfmiddlewaretoken": first[0]}, follow=False
    )
    assert answer.status_code == 302
    assert Claim.objects.filter(trade__transact_id="pt_live_Q01").exists()
    refused = browser.post(f"{QUEUE}/pt_live_Q02/claim", {"csrfmiddlewaretoken": "x" * 64})
    assert refused.status_code == 403
