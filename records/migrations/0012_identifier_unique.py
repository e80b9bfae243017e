from django.db import migrations, models

# One unique index on (value, kind, partner_id, order_id), NULLS NOT DISTINCT,
# takes the place of three: identifier_value_idx and the two partial unique
# indexes (per order; waiting, order null). It enforces both rules at once
# (a null order is one value) and leads with value, so it serves the search
# as identifier_value_idx did. Built before the old ones go, in the same
# transaction: the rows already obey it (each half is unique in its own
# partial index, and the halves differ by order_id being null or not).


class Migration(migrations.Migration):
    dependencies = [
        ("records", "0011_reserved_by_partner"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="identifier",
            constraint=models.UniqueConstraint(
                fields=("value", "kind", "partner_id", "order"),
                name="identifier_unique",
                nulls_distinct=False,
            ),
        ),
        migrations.RemoveConstraint(
            model_name="identifier",
            name="identifier_unique_per_order",
        ),
        migrations.RemoveConstraint(
            model_name="identifier",
            name="identifier_unique_waiting",
        ),
        migrations.RemoveIndex(
            model_name="identifier",
            name="identifier_value_idx",
        ),
    ]
