from django.db import migrations, models

# A trade's events by subject, for trade events only (issue 14, S5): the
# (subject_id, source, created_at, id) index held every event, and a row in
# it cost an import more than in any other index of the table (its random
# leading key); nothing asks for a quote's, a ledger entry's or a delivery
# report's events by subject, and trade events are a fifth of a network's.
# Queries that use it say ``type LIKE 'trade.%'`` in those words
# (records.models.TRADE_EVENTS). Built before the old one goes, in the same
# transaction, as the earlier index migrations do (on a much bigger table,
# build it first by hand with CREATE INDEX CONCURRENTLY under the same name).


class Migration(migrations.Migration):
    dependencies = [
        ("records", "0015_trade_newest_unchecked"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("type__startswith", "trade.")),
                fields=["subject_id", "source", "created_at", "id"],
                name="event_trade_subject_idx",
            ),
        ),
        migrations.RemoveIndex(
            model_name="webhookevent",
            name="event_subject_source_idx",
        ),
    ]
