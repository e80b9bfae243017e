from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0005_action_bulk_recover"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["created_at", "id"], name="run_created_idx"),
        ),
    ]
