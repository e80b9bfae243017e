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


def _fields(model, only=None):
    """The concrete fields of ``model`` in field order; those named in
    ``only`` (the primary key first among them) when it is given."""
    fields = model._meta.concrete_fields
    if only is None:
        return fields
    chosen = [field for field in fields if field.name in only or field.attname in only]
    if len(chosen) != len(only) or not chosen[0].primary_key:
        raise ValueError(f"{model.__name__}: {only} must name its primary key and fields")
    return chosen


def columns(alias, model, only=None):
    """``t.id, t.transact_id, …``: every concrete column of ``model``, in field
    order, or the ones named in ``only`` (then ``fetch`` is given
    ``(model, only)``: the rest are deferred, as by ``QuerySet.only``)."""
    return ", ".join(f"{alias}.{field.column}" for field in _fields(model, only))


@cache
def _plan(model, only, raw, using):
    """(model, the attnames read or None for all, their count,
    [(position, converter)]): the same for every row and every call, so
    made once per process."""
    fields = _fields(model, only)
    converters = [
        (i, converter)
        for i, field in enumerate(fields)
        if field.name not in raw
        for converter in field.get_db_converters(connections[using])
    ]
    names = None if only is None else frozenset(field.attname for field in fields)
    return model, names, len(fields), converters


def fetch(sql, params, *models, extra=(), raw=()):
    """Run ``sql`` (its SELECT list: ``columns`` of each of ``models`` in
    turn, then one column per name in ``extra``) and return a tuple per row:
    an instance of each model (``None`` for a LEFT JOIN that found nothing),
    then the extra values. A model given as ``(model, only)`` reads the
    columns ``columns(alias, model, only)`` names. Fields named in ``raw``
    keep the database's value (a jsonb column as text, for code that parses
    it itself)."""
    models = [each if isinstance(each, tuple) else (each, None) for each in models]
    using = router.db_for_read(models[0][0])
    connection = connections[using]
    plans = [
        _plan(model, None if only is None else tuple(only), tuple(raw), using)
        for model, only in models
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    out = []
    for row in rows:
        start, made = 0, []
        for model, names, width, converters in plans:
            values = row[start : start + width]
            start += width
            if values[0] is None:  # the primary key: nothing joined
                made.append(None)
                continue
            if converters:
                values = list(values)
                for i, converter in converters:
                    values[i] = converter(values[i], None, connection)
            made.append(model.from_db(using, names, values))
        out.append((*made, *row[start : start + len(extra)]))
    return out
