"""What each record of an order reads like on its timeline: one ``Item`` each.

Received events (quotes, status changes, ledger postings), delivery attempts
to the partner and the support actions of the audit log all become items of
the same shape, which ``build`` merges into one history; ``fold_polls`` then
folds each run of re-polls that found nothing new into one line.
"""

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import orjson

from accounts.permissions import Action
from audit import log as audit
from audit.models import Entry
from lib.formats import datetime_attr, rfc3339_or_none, utc_text
from records import states
from records.models import DeliveryAttempt, WebhookEvent

# A webhook received this long after it happened upstream is shown as late.
LATE_AFTER = timedelta(minutes=5)
# Items that are a stored event of their own, which can be sent to the partner again.
REPLAYABLE_KINDS = frozenset({"quote", "status", "ledger", "event"})


@dataclass
class Item:
    """One line of the history: what happened ``at`` (upstream time), and for a
    received event when and how the panel learned of it. ``tiebreak`` (the
    row's id) keeps items of one kind at one instant in arrival order."""

    at: object
    kind: str
    title: str
    detail: str = ""
    ids: dict = field(default_factory=dict)
    learned_at: object = None
    source: str = ""
    flag: str = ""  # a move's outcome, a failed delivery, an expired quote, an action not ok
    tiebreak: int = 0
    # (transact id, status) of a re-poll that found nothing new: its stored
    # answer, or its audit entry; ``folds`` when it goes into a folded line
    # (the answers and the schedule's entries). See ``fold_polls``.
    repoll: tuple = ()
    folds: bool = False
    # A folded line: how many re-polls, the first and the last (JSON values).
    folded: dict | None = None

    @property
    def replayable(self):
        return self.kind in REPLAYABLE_KINDS and "event" in self.ids

    # The item's time for the page, once in Python: two ``date`` filters per
    # item were a large share of a long timeline's rendering.
    @property
    def at_attr(self):
        return datetime_attr(self.at)

    @property
    def at_text(self):
        return utc_text(self.at, "", zone=False)

    @property
    def learned_late(self):
        """Only a webhook or a status read can arrive late: an import is a
        backfill, learned after the fact by design."""
        return bool(
            self.learned_at
            and self.source in ("webhook", "poll")
            and self.learned_at - self.at > LATE_AFTER
        )

    def as_json(self):
        return {
            "at": rfc3339_or_none(self.at),
            "kind": self.kind,
            "summary": self.title + (f" — {self.detail}" if self.detail else ""),
            "ids": self.ids,
            "learnedAt": rfc3339_or_none(self.learned_at),
            "source": self.source or None,
            "flag": self.flag or None,
            "folded": self.folded,
        }


def event_items(events, changes, ledger, deliveries):
    """One item per received event, and one per delivery attempt to the partner."""
    change_of = {c.event_id: c for c in changes}
    ledger_of = {entry.event_id: entry for entry in ledger}
    items = []
    for event in events:
        data = event_data(event)
        received = {
            "learned_at": event.received_at,
            "source": event.source,
            "tiebreak": event.pk,
        }
        provenance = _provenance(event)
        ids = {"event": event.event_id}
        if event.type.startswith("quote."):
            items.append(_quote_item(event, data, ids, provenance, received))
        elif event.type.startswith("trade."):
            change = change_of.get(event.pk)
            items.append(_trade_item(event, data, change, ids, provenance, received))
        elif event.type == "ledger.posted":
            entry = ledger_of.get(event.event_id)
            items.append(_ledger_item(event, data, entry, ids, provenance, received))
        # webhook.delivery_attempted: shown from its attempt row below
    by_pk = {e.pk: e for e in events}
    by_event_id = {e.event_id: e for e in events}
    for attempt in deliveries:
        delivered = by_event_id.get(attempt.event_id)
        report = by_pk.get(attempt.reported_by_id)
        items.append(_delivery_item(attempt, delivered, report))
    return items


def event_data(event):
    """The ``data`` of the event's stored envelope."""
    payload = event.payload if isinstance(event.payload, dict) else orjson.loads(event.payload)
    return payload["data"]


def _provenance(event):
    how = {"webhook": "webhook", "import": "import", "poll": "status read"}[event.source]
    parts = [f"{event.event_id} via {how}"]
    if event.source == "webhook":
        parts.append(f"signature ok ({event.verified_with})" if event.verified_with else "unsigned")
    if event.duplicate_count:
        parts.append(f"received {event.duplicate_count + 1} times")
    if event.state != WebhookEvent.State.PROCESSED:
        parts.append(f"{event.state} after {event.attempts} attempt(s)")
    return ", ".join(parts)


def _quote_item(event, data, ids, provenance, received):
    ids |= {"quote": data["quoteId"]}
    if data.get("requestId"):
        ids["request"] = data["requestId"]
    amount = f"{data['amount']['value']} {data['amount']['currency']}"
    kind = event.type.split(".", 1)[1]
    if kind == "created":
        title = f"Quote {data['quoteId']} created: {amount} on {data['network']}"
        if data.get("rate"):
            title += f" at {data['rate']}"
        if data.get("expiresAt"):
            title += f", expires {data['expiresAt'][11:19]} UTC"
    elif kind == "unavailable":
        title = f"Quote unavailable for {amount} on {data['network']} (no lock issued)"
    else:
        title = f"Quote {data['quoteId']} {kind}"
    return Item(
        at=event.created_at,
        kind="quote",
        title=title,
        detail=provenance,
        ids=ids,
        flag="expired" if kind == "expired" else "",
        **received,
    )


def _trade_item(event, data, change, ids, provenance, received):
    """A status move of the trade, or (no change recorded) a repeat of its status."""
    ids |= {"trade": data["transactId"]}
    if data.get("requestId"):
        ids["request"] = data["requestId"]
    if change is None:
        quiet = event.source == WebhookEvent.Source.POLL
        return Item(
            at=event.created_at,
            kind="event",
            title=f"{event.type} again: no change (already {data['status']})",
            detail=provenance,
            ids=ids,
            repoll=(data["transactId"], data["status"]) if quiet else (),
            folds=quiet,
            **received,
        )
    outcome = change.outcome
    if outcome == states.APPLIED:
        title = (
            f"{change.from_status} → {change.to_status}" if change.from_status else change.to_status
        )
    elif outcome in (states.LATE, states.ILLEGAL):
        title = f"{change.to_status} ({outcome}, not applied)"
    else:
        title = f"{change.from_status} → {change.to_status} (status read overrides)"
    return Item(
        at=change.upstream_at,
        kind="status",
        title=f"Trade {title}",
        detail=f"{change.note}. {provenance}" if change.note else provenance,
        ids=ids,
        flag="" if outcome == states.APPLIED else outcome,
        **received,
    )


def _ledger_item(event, data, entry, ids, provenance, received):
    ids |= {"ledger": data["ledgerId"], "trade": data["transactId"]}
    amount = f"{data['amount']['value']} {data['amount']['currency']}"
    return Item(
        at=entry.posted_at if entry else event.created_at,
        kind="ledger",
        title=f"Ledger {data['entryType']} {data['direction']} {amount}",
        detail=provenance,
        ids=ids,
        **received,
    )


def _delivery_item(attempt, delivered, report):
    """An attempt at delivering an event to the partner, told by ``report`` (an
    upstream webhook.delivery_attempted) or, for a replay, by nobody."""
    what = delivered.type if delivered else attempt.event_id
    if attempt.response_status:
        answer = f"HTTP {attempt.response_status}"
        if attempt.duration_ms is not None:
            answer += f" in {attempt.duration_ms} ms"
    else:
        answer = "no answer"
        if attempt.duration_ms is not None:
            answer += f" after {attempt.duration_ms} ms"
    return Item(
        at=attempt.attempted_at,
        kind="delivery",
        title=f"Delivery of {what} to the partner: attempt {attempt.attempt}, {attempt.outcome}",
        detail=answer + (f". {_provenance(report)}" if report else ""),
        ids={"event": attempt.event_id},
        flag="" if attempt.outcome == DeliveryAttempt.Outcome.SUCCEEDED else "failed",
        learned_at=report.received_at if report else None,
        source=report.source if report else "",
        tiebreak=attempt.pk,
    )


def action_items(entries):
    """Support actions taken on the order, from the audit log."""
    items = []
    for entry in entries:
        # The vocabulary's title; an action since renamed or retired (the
        # audit log is append-only) reads as its stored name.
        title = f"{entry.get_action_display()} of {entry.target}"
        title += f" by {entry.actor_name}" + (f" ({entry.role})" if entry.role else "")
        title += f": {entry.get_result_display()}"
        if entry.before_status or entry.after_status:
            title += f", {entry.before_status or '?'} → {entry.after_status or '?'}"
        detail = entry.detail + (f". Reason: {entry.reason}" if entry.reason else "")
        items.append(
            Item(
                at=entry.at,
                kind="action",
                title=title,
                detail=detail,
                ids={"audit": entry.pk, "target": entry.target},
                flag="" if entry.result == Entry.Result.OK else entry.result,
                tiebreak=entry.pk,
                repoll=(entry.target, entry.after_status) if _quiet_repoll(entry) else (),
                # A person's re-poll stays its own item: who asked, and why.
                folds=_quiet_repoll(entry) and _by_schedule(entry),
            )
        )
    return items


def _quiet_repoll(entry):
    """A re-poll that found what we knew already."""
    return (
        entry.action == Action.TRADE_REPOLL
        and entry.result == Entry.Result.OK
        and entry.before_status == entry.after_status
    )


def _by_schedule(entry):
    return entry.actor_id is None and entry.actor_name == audit.SCHEDULE


def fold_polls(items):
    """Each run of consecutive re-polls of a trade that found nothing new, as
    one line: the stored answers, with the schedule's audit entries of them.

    ``items`` are in timeline order. Anything else between two answers (a
    status move, a delivery, a claim, a person's re-poll) ends the run, so
    the line sits where the polls happened, at the time of its last answer.
    Each re-poll is one thing: the schedule's entry is counted with its
    answer, and a person's entry (its own item) carries its answer.
    """
    hidden, scheduled = _pairs(items)
    folded, run = [], []
    for item in items:
        if id(item) in hidden:
            continue
        if run and not (item.folds and item.repoll == run[0].repoll):
            folded.append(_poll_line(run, scheduled))
            run = []
        if item.folds:
            run.append(item)
        else:
            folded.append(item)
    if run:
        folded.append(_poll_line(run, scheduled))
    return folded


def _pairs(items):
    """Pair each quiet re-poll entry with its stored answer: the newest answer
    of that trade learned before the entry (the answer is stored in the
    transaction that then writes the entry, wherever a move 0Pools dated
    between the two puts them on the timeline).

    Returns the ``id()`` of the items a pair hides (the schedule's entries,
    the answers of a person's re-poll) and of the answers the schedule's
    entries went with.
    """
    answers = defaultdict(list)
    for item in items:
        if item.repoll and item.kind == "event":
            answers[item.repoll].append(item)
    learned = {}
    for repoll, same in answers.items():
        same.sort(key=lambda answer: answer.learned_at)
        learned[repoll] = [answer.learned_at for answer in same]
    hidden, scheduled, taken = set(), set(), set()
    for item in items:
        if not (item.repoll and item.kind == "action" and item.repoll in answers):
            continue
        n = bisect_right(learned[item.repoll], item.at)
        answer = answers[item.repoll][n - 1] if n else None
        if answer is None or id(answer) in taken:
            continue
        taken.add(id(answer))
        if item.folds:
            hidden.add(id(item))
            scheduled.add(id(answer))
        else:
            hidden.add(id(answer))
    return hidden, scheduled


def _poll_line(run, scheduled_answers):
    """One line for ``run``: answers, and the schedule's entries whose answer
    is not among the items (past the cap)."""
    transact_id, status = run[0].repoll
    answers = [item for item in run if item.kind == "event"]
    scheduled = len(run) - len(answers)
    scheduled += sum(1 for answer in answers if id(answer) in scheduled_answers)
    count = len(answers) or scheduled
    first, last = (answers or run)[0].at, (answers or run)[-1].at
    if count == 1:
        title = f"Polled once at {utc_text(last)}: no change, {transact_id} still {status}"
    else:
        title = (
            f"Polled {count} times, last at {utc_text(last)}: "
            f"no change, {transact_id} still {status}"
        )
    details = []
    if count > 1:
        details.append(f"first at {utc_text(first)}")
    if scheduled == count:
        details.append("by the schedule" if count == 1 else "all by the schedule")
    elif scheduled:
        details.append(f"{scheduled} by the schedule")
    ids = {"trade": transact_id}
    if answers:
        ids["lastPoll"] = answers[-1].ids["event"]
        kept = "the answer is kept" if count == 1 else "each answer is kept, the newest"
        details.append(f"{kept}: {ids['lastPoll']}")
    detail = "; ".join(details)
    return Item(
        at=last,
        kind="polls",
        title=title,
        detail=detail[:1].upper() + detail[1:] + "." if detail else "",
        ids=ids,
        source="poll",
        tiebreak=run[-1].tiebreak,
        folded={
            "count": count,
            "scheduled": scheduled,
            "firstAt": rfc3339_or_none(first),
            "lastAt": rfc3339_or_none(last),
        },
    )
