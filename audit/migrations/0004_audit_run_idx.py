from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_action_bulk_recover"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="entry",
            index=models.Index(
                condition=models.Q(("run_id__isnull", False)),
                fields=["run_id", "-at", "-id"],
                name="audit_run_idx",
            ),
        ),
    ]
