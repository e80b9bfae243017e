"""The trade state machine of the contract.

A status never moves backwards. An observation of a status is classified
against the trade's current status:

- ``applied``: a legal move forward (or the first status we learn);
- ``repeat``: the status we already have, nothing to do;
- ``late``: a status that lies *behind* the current one on a legal path
  (``reserved`` after ``settled``): recorded on the timeline, not applied;
- ``illegal``: no legal path joins them (``failed`` -> ``settled``):
  recorded and flagged, not applied;
- ``override``: an illegal move reported by a status read (poll). The
  contract makes the status read authoritative over any webhook, so it is
  applied, and flagged so a person looks at it.
"""

RESERVED = "reserved"
SETTLED = "settled"
FAILED = "failed"
RELEASED = "released"
RETURNED = "returned"

STATUSES = (RESERVED, SETTLED, FAILED, RELEASED, RETURNED)
FINAL_STATUSES = frozenset({SETTLED, FAILED, RELEASED, RETURNED})

LEGAL_NEXT = {
    RESERVED: frozenset({SETTLED, FAILED, RELEASED}),
    SETTLED: frozenset({RETURNED}),
    FAILED: frozenset(),
    RELEASED: frozenset(),
    RETURNED: frozenset(),
}

APPLIED = "applied"
REPEAT = "repeat"
LATE = "late"
ILLEGAL = "illegal"
OVERRIDE = "override"


def _reachable(start, goal):
    """True when ``goal`` can be reached from ``start`` by one or more legal moves."""
    frontier = set(LEGAL_NEXT[start])
    seen = set()
    while frontier:
        status = frontier.pop()
        if status == goal:
            return True
        seen.add(status)
        frontier |= LEGAL_NEXT[status] - seen
    return False


def classify(current, claimed, *, authoritative=False):
    """Classify a move from ``current`` (None when unknown) to ``claimed``."""
    if claimed not in LEGAL_NEXT:
        raise ValueError(f"unknown trade status {claimed!r}")
    if current is None:
        return APPLIED
    if claimed == current:
        return REPEAT
    if claimed in LEGAL_NEXT[current] or _reachable(current, claimed):
        return APPLIED
    if _reachable(claimed, current):
        return LATE
    return OVERRIDE if authoritative else ILLEGAL
