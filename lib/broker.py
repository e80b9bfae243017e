"""kombu's Redis transport, with one client per channel instead of one per command.

kombu's Redis channel makes a new ``redis.Redis`` object for every command
it sends outside a consumer (``conn_or_acquire``): a publish, a queue's size,
a purge. Building one copies redis-py's table of ~170 response callbacks, a
third of what publishing a task cost the webhook (issue 14). The client
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
