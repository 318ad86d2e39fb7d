"""A local HTTP emulator of the parts of Stripe's v1 API that the billing portal uses.

Start it with ``python -m stripe_emulator --port 12111`` or, from Python::

    from stripe_emulator import EmulatorServer
    srv = EmulatorServer(port=0).start()
"""

from .server import EmulatorServer

__all__ = ["EmulatorServer"]
