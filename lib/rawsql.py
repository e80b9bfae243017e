"""Plain SQL reads into model instances, for the hottest pages.

The ORM builds a page's SQL afresh on every request; on the order timeline
that was over half the page's time (seven statements, two of them UNIONs),
several times what PostgreSQL took to answer them (issue 14). Here the
statements are written once, with every concrete column of each model
named by ``columns``, and ``fetch`` turns each row back into instances the
way the ORM does (``Model.from_db``, the fields' own converters), so the
rest of the code cannot tell the difference.
"""

from functools import cache

from django.db import connections, router


def columns(alias, model):
    """``t.id, t.transact_id, …``: every concrete column of ``model``, in field order."""
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


@cache
def _plan(model, raw, using):
    """(model, its column count, [(position, converter)]): the same for every
    row and every call, so made once per process."""
    fields = model._meta.concrete_fields
    converters = [
        (i, converter)
        for i, field in enumerate(fields)
        if field.name not in raw
        for converter in field.get_db_converters(connections[using])
    ]
    return model, len(fields), converters


def fetch(sql, params, *models, extra=(), raw=()):
    """Run ``sql`` (its SELECT list: ``columns`` of each of ``models`` in
    turn, then one column per name in ``extra``) and return a tuple per row:
    an instance of each model (``None`` for a LEFT JOIN that found nothing),
    then the extra values. Fields named in ``raw`` keep the database's value
    (a jsonb column as text, for code that parses it itself)."""
    using = router.db_for_read(models[0])
    connection = connections[using]
    plans = [_plan(model, tuple(raw), using) for model in models]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    out = []
    for row in rows:
        start, made = 0, []
        for model, width, converters in plans:
            values = row[start : start + width]
            start += width
            if values[0] is None:  # the primary key: nothing joined
                made.append(None)
                continue
            if converters:
                values = list(values)
                for i, converter in converters:
                    values[i] = converter(values[i], None, connection)
            made.append(model.from_db(using, None, values))
        out.append((*made, *row[start : start + len(extra)]))
    return out
