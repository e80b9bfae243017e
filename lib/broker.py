"""kombu's Redis transport, with one client per channel instead of one per command.

kombu's Redis channel makes a new ``redis.Redis`` object for every command
it sends outside a consumer (``conn_or_acquire``): a publish, a queue's size,
a purge. Building one copies redis-py's table of ~170 response callbacks, a
fifth of what publishing a task cost the webhook (issue 14). The client
holds no connection of its own (it borrows one from the channel's pool for
each command, as before), so one client per channel is kept and made again
when the channel's pool is (a channel closed after a connection error gets a
new pool). Nothing else changes: the same commands, the same connections,
the same errors when the broker is away.

``CELERY_BROKER_TRANSPORT`` names this class for ``redis://`` brokers only.
"""

from kombu.transport import redis


class Channel(redis.Channel):
    _command_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._command_client
        pool = self.pool
        if client is None or client.connection_pool is not pool:
            client = self._command_client = super()._create_client()
        return client


class Transport(redis.Transport):
    Channel = Channel


def ping(app):
    """Raise unless the broker answers now (connecting gives up after ~2 s).

    On this transport: a PING on a connection of the app's pool, kept from
    one check to the next; a new connection per check (a channel, two
    connection pools, a handshake) cost /healthz ~2 ms of CPU (issue 14).
    Every check still goes to the broker and back: on a connection the
    broker dropped the PING fails (redis-py reconnects once first, so a
    broker back again answers) and the connection is let go, so the next
    check connects anew. Other transports connect anew each time, as before.
    """
    with app.pool.acquire(block=True, timeout=2) as connection:
        if issubclass(connection.get_transport_cls(), Transport):
            try:
                _connect(connection)
                with connection.default_channel.conn_or_acquire() as client:
                    client.ping()
            except Exception:
                connection.collect()  # its sockets may be dead: the next check connects anew
                raise
            return
    with app.connection_for_write() as connection:
        _connect(connection)


def _connect(connection):
    # One more try at once, not after kombu's default 2 s pause: a health
    # check answers fast, and a refused connection is refused.
    connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
