from django.db import migrations, models

# A trade's events by (subject_id, source, created_at, id) instead of
# (subject_id, created_at): the stuck queue's "last poll" and "last delivery"
# no longer walk past the status reads the 5-minute re-poll stores (288 a
# day for a stuck trade): the newest read is the first entry of its range,
# and the events 0Pools sent are ranges of their own. The
# new index is built before the old one goes, in the same transaction, as
# the earlier index migrations do: event writes wait for it (tens of seconds
# at 10 M events here; on a much bigger table, build it first by hand with
# CREATE INDEX CONCURRENTLY under the same name).


class Migration(migrations.Migration):
    dependencies = [
        ("records", "0012_identifier_unique"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(
                fields=["subject_id", "source", "created_at", "id"],
                name="event_subject_source_idx",
            ),
        ),
        migrations.RemoveIndex(
            model_name="webhookevent",
            name="event_subject_time_idx",
        ),
    ]
