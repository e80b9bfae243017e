"""/runs/: every guarded run, yours first."""

import csv
import html
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import RunFactory, ScheduledRunFactory

pytestmark = pytest.mark.django_db


def shown(response):
    assert response.status_code == 200
    return [run.pk for run in response.context["rows"]]


def next_link(response):
    found = re.search(r'<a href="([^"]*)"[^>]*rel="next"', response.content.decode())
    return found and html.unescape(found.group(1))


def text_of(text, element_id):
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|div)>', text, re.S)
    return found and " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


# --- /runs/ -----------------------------------------------------------------------------


@pytest.fixture
def runs(support_user, operations_user):
    """Runs of two people and of the schedule, an hour apart, newest last."""
    now = timezone.now()
    made = [
        RunFactory(user=operations_user, created_at=now - timedelta(hours=5)),
        RunFactory(
            user=support_user,
            created_at=now - timedelta(hours=4),
            action="event.replay",
            target="evt_replay01",
            state="failed",
            done=0,
            failed=1,
        ),
        ScheduledRunFactory(created_at=now - timedelta(hours=3), state="done", total=3, done=3),
        RunFactory(user=operations_user, created_at=now - timedelta(hours=2), state="failed"),
        RunFactory(user=operations_user, created_at=now - timedelta(hours=1)),
    ]
    return [run.pk for run in made]


def test_the_runs_list_shows_my_runs_newest_first(ops, runs):
    response = ops.get("/runs/")

    assert shown(response) == [runs[4], runs[3], runs[0]]
    assert text_of(response.content.decode(), "runs-whose") == "Showing your runs. All users"


def test_all_users_is_one_click_away(ops, runs):
    first = ops.get("/runs/?state=done").content.decode()
    everyone = html.unescape(re.search(r'<a id="runs-everyone" href="([^"]+)"', first).group(1))

    response = ops.get(everyone)

    assert everyone == "/runs/?state=done&who=all"
    assert shown(response) == [runs[4], runs[2], runs[0]]
    assert "Only mine" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("user=sam-support", [1]),
        ("user=SAM-SUPPORT&who=mine", [1]),  # a username is the narrower question
        ("user=schedule", [2]),
        ("who=all&action=event.replay", [1]),
        ("who=all&state=failed", [3, 1]),
        ("action=trade.repoll&state=failed", [3]),
    ],
)
def test_filters_narrow_the_runs(ops, runs, query, expected):
    assert shown(ops.get(f"/runs/?{query}")) == [runs[i] for i in expected]


def test_a_bad_filter_is_a_form_error_with_no_rows(ops, runs):
    response = ops.get("/runs/?state=exploded")

    assert response.context["rows"] == []
    assert "Fix the filters" in response.content.decode()


def test_each_row_links_to_its_run_page_and_an_event_target_to_its_event(ops, runs):
    text = ops.get("/runs/?who=all").content.decode()

    for pk in runs:
        assert f'<a href="/actions/runs/{pk}/">#{pk}</a>' in text
    assert '<a href="/events/evt_replay01/">evt_replay01</a>' in text


def test_pages_walk_every_run_newest_first(ops, runs):
    seen, url = [], "/runs/?who=all&per_page=2"
    while url:
        response = ops.get(url)
        seen += shown(response)
        url = next_link(response)

    assert seen == list(reversed(runs))


def test_csv_holds_every_matching_run(ops, runs, operations_user):
    response = ops.get("/runs/?who=all&format=csv")

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:5] == ["id", "createdAt", "user", "action", "target"]
    assert [int(row[0]) for row in rows[1:]] == list(reversed(runs))
    assert rows[1][2] == operations_user.username
    assert rows[3][2] == ""  # the schedule's run has no user


def test_the_runs_list_is_a_handful_of_queries(ops, runs, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        assert len(shown(ops.get("/runs/?who=all"))) == 5
