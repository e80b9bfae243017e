"""gunicorn's settings for the panel, read from the working directory by
``gunicorn opspanel.wsgi`` (flags on the command line win).

Threaded workers: a sync worker holds its one process while a request waits
on PostgreSQL (the webhook's INSERT and COMMIT), on the broker (its publish)
and on the client closing the connection, and closes every connection after
one request. With threads another request uses the CPU meanwhile, and a
client's connection is kept for its next request. Django's connections are
per thread (the psycopg pool, DATABASE_POOL_MAX, is per process).
"""

import gc

worker_class = "gthread"
threads = 4


def post_worker_init(worker):
    """Once the worker has loaded Django, import every view (the URLconf) and
    move everything alive into the collector's permanent generation: modules,
    models and views are never garbage, and every full collection walked them
    all, a 40-60 ms pause on whichever request it fell (issue 14: a list
    page's slowest of 600 requests fell from 56 to 16 ms)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and its views
    gc.freeze()
