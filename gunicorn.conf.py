"""gunicorn's settings for the panel, read from the working directory by
``gunicorn opspanel.wsgi`` (flags on the command line win).

Threaded workers: a sync worker holds its one process while a request waits
on PostgreSQL (the webhook's INSERT and COMMIT), on the broker (its publish)
and on the client closing the connection, and closes every connection after
one request. With threads another request uses the CPU meanwhile, and a
client's connection is kept for its next request. Django's connections are
per thread (the psycopg pool, DATABASE_POOL_MAX, is per process).
"""

worker_class = "gthread"
threads = 4
