"""Thin builders for contract envelopes used across the tests."""

import itertools

_counter = itertools.count(1)


def _event_id():
    return f"evt_t{next(_counter):06d}"


def trade(
    status,
    *,
    transact_id="pt_live_9A2",
    reference="order_7841",
    partner="ptn_acme",
    history=None,
    at="2026-06-28T20:15:03Z",
    event_id=None,
    **extra,
):
    history = history if history is not None else [{"status": status, "at": at}]
    data = {
        "object": "trade",
        "transactId": transact_id,
        "quoteId": "pq_live_01J4",
        "partnerId": partner,
        "partnerReference": reference,
        "poolId": "EUR-USDT",
        "side": "buy",
        "network": "tron",
        "amount": {"value": "100.00", "currency": "EUR"},
        "deliverAmount": {"value": "107.31", "currency": "USDT"},
        "rate": "1.0731",
        "feeBps": 30,
        "idempotencyKey": f"{reference}:accept:1",
        "requestId": "req_01HZY0P2",
        "status": status,
        "failureCode": "insufficient_liquidity" if status == "failed" else None,
        "statusHistory": history,
        "createdAt": "2026-06-28T20:13:11Z",
        "updatedAt": at,
        **extra,
    }
    return envelope(f"trade.{status}", data, at=at, event_id=event_id)


def quote(kind="created", *, quote_id="pq_live_01J4", reference="order_7841", **extra):
    available = kind != "unavailable"
    data = {
        "object": "quote",
        "quoteId": quote_id,
        "partnerId": "ptn_acme",
        "partnerReference": reference,
        "poolId": "EUR-USDT",
        "side": "buy",
        "network": "tron",
        "amount": {"value": "100.00", "currency": "EUR"},
        "available": available,
        "type": "firm",
        "executable": available,
        "requestId": "req_01HZY0Q1",
        "createdAt": "2026-06-28T20:14:15Z",
        **extra,
    }
    if available:
        data.update(rate="1.0731", spreadBps=25, feeBps=30, expiresAt="2026-06-28T20:14:30Z")
    return envelope(f"quote.{kind}", data, at="2026-06-28T20:14:15Z")


def ledger(
    ledger_id="ledger_0pools_772",
    *,
    transact_id="pt_live_9A2",
    value="107.31",
    entry_type="settlement",
):
    data = {
        "object": "ledger_entry",
        "ledgerId": ledger_id,
        "transactId": transact_id,
        "partnerId": "ptn_acme",
        "poolId": "EUR-USDT",
        "entryType": entry_type,
        "direction": "credit",
        "amount": {"value": value, "currency": "USDT"},
        "postedAt": "2026-06-28T20:15:04Z",
    }
    return envelope("ledger.posted", data, at="2026-06-28T20:15:04Z")


def delivery(
    event_id,
    *,
    attempt=1,
    outcome="succeeded",
    partner="ptn_acme",
    at="2026-06-28T20:15:09Z",
    status=None,
    duration_ms=184,
):
    data = {
        "object": "delivery_attempt",
        "eventId": event_id,
        "partnerId": partner,
        "attempt": attempt,
        "responseStatus": status or (200 if outcome == "succeeded" else 500),
        "durationMs": duration_ms,
        "outcome": outcome,
        "attemptedAt": at,
    }
    return envelope("webhook.delivery_attempted", data, at=at)


def envelope(event_type, data, *, at, event_id=None, livemode=True):
    return {
        "id": event_id or _event_id(),
        "type": event_type,
        "createdAt": at,
        "livemode": livemode,
        "data": data,
    }
