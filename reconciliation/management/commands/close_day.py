"""``manage.py close_day YYYY-MM-DD``: close a UTC day by hand (what the beat does)."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from lib.formats import utc_text
from reconciliation import services


def _day(text):
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


class Command(BaseCommand):
    help = (
        "Close a UTC day: store its reconciliation totals and exceptions as they are now. "
        "A day already closed is left as it was."
    )

    def add_arguments(self, parser):
        parser.add_argument("day", help="the UTC day, YYYY-MM-DD")

    def handle(self, *args, day, **options):
        day = _day(day)
        try:
            close, created = services.close_day(day, by="cli")
        except services.NotOver as exc:
            raise CommandError(str(exc)) from None
        count = close.exceptions.count()
        when = utc_text(close.closed_at)
        if created:
            self.stdout.write(
                self.style.SUCCESS(f"Closed {day}: {count} exception{'s' if count != 1 else ''}")
                + f" ({close.took_ms} ms)."
            )
        else:
            self.stdout.write(
                f"{day} was already closed at {when} by {close.closed_by} "
                f"({count} exception{'s' if count != 1 else ''}); nothing changed."
            )
