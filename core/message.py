"""``Message``: the base of the records pysc's processes send each other (the
gofer protocol, the control protocol).  A message is a ``Record`` whose
fields, in order, are its wire form (``astuple``/``asdict``)."""
from __future__ import annotations

from pysc.core.record import Record


class Message(Record):
    pass
