"""Values both sides of the Flight boundary must agree on: the data node and the serve node read them here."""

from __future__ import annotations

import re

# A series' step: an optional positive count and a unit (15min, 1h, 1d, 1w, 1mo, 1q, 1y; "h" is 1h).
# s, min, h, d and w are fixed lengths; mo, q and y follow the calendar.
FREQUENCY_UNITS = ("s", "min", "h", "d", "w", "mo", "q", "y")
FREQUENCY = re.compile(rf"^(\d*)({'|'.join(FREQUENCY_UNITS)})$")

# The longest series id, in UTF-8 bytes, a dataset may hold and a request may name.
MAX_SERIES_ID_BYTES = 256

# The Flight DoExchange command a serve node sends to subscribe to the data node's commit notices.
NOTICES_COMMAND = b"flightcast.notices"

# Flight actions by which serve nodes agree on the version each model serves (a rollback on one reaches all):
# SERVING_ACTION (body JSON {"model", "run", "spec_hash", "challenger"}) records a choice on the data node and
# announces it to every subscribed serve node before it returns; SERVINGS_ACTION lists the choices recorded.
SERVING_ACTION = "flightcast.serving"
SERVINGS_ACTION = "flightcast.servings"
