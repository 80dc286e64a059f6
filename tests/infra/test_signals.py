"""infra.signals: inside the block SIGTERM and SIGINT reach the handler; after it the previous handlers are back."""
from __future__ import annotations

import os
import signal

from infra.signals import STOP_SIGNALS, on_stop_signals


def test_stop_signals_reach_the_handler_inside_the_block_and_the_old_handlers_return():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    received = []
    with on_stop_signals(lambda signum, frame: received.append(signum)):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert received == [signal.SIGTERM, signal.SIGINT]
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
