"""S5's lanes: ``import_events`` in one process and with ``--jobs N``, the
same lines, one database, one child process.

Lanes commit on connections of their own, so unlike the rest of the bench
their import cannot be rolled back: ``bench.writes`` runs this on a copy of
the data set (or on an empty database) and drops it after. The import in one
process runs first, twice (the first warms the copy), rolled back, so both
ways start from the same rows.

    python -m bench.import_copy PATH JOBS   (DATABASE_URL names the copy)

prints ``{"warm_up": seconds, "one": seconds, "lanes": seconds}``; each is
timed around the command alone, after Django's start.
"""

import json
import sys


def main(path, jobs):
    import django

    django.setup()
    from bench.writes import rolled_back, time_import

    # The first import into a fresh copy reads it into memory; only the
    # second is timed, so neither way gets a warmer copy than the other.
    warm = rolled_back(lambda: time_import(path))
    one = rolled_back(lambda: time_import(path))
    lanes = time_import(path, jobs=jobs)
    return {"warm_up": warm, "one": one, "lanes": lanes}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
