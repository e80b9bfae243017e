# The claim model moved to the queues app; its table stays where it is.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0002_run_heartbeat"),
        ("queues", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Claim")],
            database_operations=[],
        ),
    ]
