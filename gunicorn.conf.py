"""gunicorn's settings, read when it starts from the repository root.

Each worker process serves requests on four threads. A webhook request
spends most of its time waiting, not computing: for the INSERT, for the
commit's WAL flush (the event is durable before the 2xx) and for the
broker's publish. On a sync worker nothing else runs meanwhile; on threads
the worker takes the next request, and the commits of concurrent requests
share their WAL flushes. The process count stays what the command line
says (``--workers``).
"""

worker_class = "gthread"
threads = 4
