"""The pipeline's one way to run SQL."""

import psycopg
from django.db import connection


def execute(sql, params=()):
    """Run one statement with server-side binding and binary parameters (``%b``).

    Django's psycopg cursors bind on the client, quoting every element of
    every array parameter as text; the pipeline's batches are arrays of
    thousands, so it talks to psycopg directly, on Django's connection and
    inside Django's transaction.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        return cursor.fetchall()
