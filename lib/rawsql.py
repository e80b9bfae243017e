"""Plain SQL reads into model instances, for the hottest pages.

The ORM builds a page's SQL afresh on every request; on the order timeline
that was over half the page's time (seven statements, two of them UNIONs),
several times what PostgreSQL took to answer them (issue 14). Here the
statements are written once, with the columns of each model named by
``columns`` (every concrete one, or a chosen few: the rest deferred, as
``.only()`` leaves them), and ``fetch`` turns each row back into instances
as the ORM does (the fields' own converters; ``Model.from_db``, or the
instance's ``__dict__`` filled directly where ``from_db`` would do no
more), so the rest of the code cannot tell the difference.
"""

from functools import cache
from inspect import getattr_static

from django.db import connections, router
from django.db.models import Model, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute


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


def unseen(sql_type):
    """A placeholder for a value no plan sees: ``(SELECT %s::type)::type``.

    The panel's statements are prepared (server-side binding, psycopg's
    ``prepare_threshold``), and PostgreSQL keeps a statement's generic plan
    only if it costs no more than the plans made for each call's values. A
    value that makes those custom plans look cheaper (a narrow time window,
    a list of two ids, a range of a few index entries) keeps PostgreSQL
    planning the statement again on every call, often for longer than it
    runs. Behind a sub-select the value is unknown to every plan alike, so
    the generic plan is kept. Use it where the plan is the same whatever the
    value; a condition whose best plan depends on its value (how common a
    partner is) should stay seen. The outer cast lets an array stand where
    ``= ANY(...)`` wants one: a bare sub-select there reads as rows.
    (``docs/decisions.md``, "Plans kept".)"""
    return f"(SELECT %s::{sql_type})::{sql_type}"


def _made_plainly(model):
    """Whether ``model.from_db`` only fills a new instance's ``__dict__``: the
    model keeps Django's ``__init__`` and ``from_db``, nobody listens to its
    pre_init or post_init (checked when the plan is made, once), and every
    column is behind an attribute that stores the value and nothing else."""
    return (
        model.__init__ is Model.__init__
        and model.from_db.__func__ is Model.from_db.__func__
        and not signals.pre_init.has_listeners(model)
        and not signals.post_init.has_listeners(model)
        and all(
            type(getattr_static(model, field.attname, None))
            in (DeferredAttribute, ForeignKeyDeferredAttribute)
            for field in model._meta.concrete_fields
        )
    )


def _maker(model, fields, using):
    """values -> an instance, as ``model.from_db(using, names, values)`` makes it.

    ``Model.__init__`` walks every field of the model (two dozen for a
    trade) with a signal either side; for a page of rows of four models
    that was half a millisecond. Where it would only have filled the
    ``__dict__`` (``_made_plainly``), this fills it directly; a column not
    read stays out of it, deferred, as ``from_db`` leaves it."""
    if not _made_plainly(model):
        names = {field.attname for field in fields}
        if len(fields) == len(model._meta.concrete_fields):
            names = None
        return lambda values: model.from_db(using, names, values)
    attnames = [field.attname for field in fields]
    new = object.__new__

    def make(values):
        instance = new(model)
        state = instance._state = ModelState()
        state.adding, state.db = False, using
        instance.__dict__.update(zip(attnames, values, strict=True))
        return instance

    return make


@cache
def _plan(model, only, raw, using):
    """(its maker, its column count, [(position, converter)]): the same for
    every row and every call, so made once per process."""
    fields = _fields(model, only)
    converters = [
        (i, converter)
        for i, field in enumerate(fields)
        if field.name not in raw
        for converter in field.get_db_converters(connections[using])
    ]
    return _maker(model, fields, using), len(fields), converters


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
        for make, width, converters in plans:
            values = row[start : start + width]
            start += width
            if values[0] is None:  # the primary key: nothing joined
                made.append(None)
                continue
            if converters:
                values = list(values)
                for i, converter in converters:
                    values[i] = converter(values[i], None, connection)
            made.append(make(values))
        out.append((*made, *row[start : start + len(extra)]))
    return out
