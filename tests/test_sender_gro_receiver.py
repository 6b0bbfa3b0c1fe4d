"""Small equal events batched into shared GSO super-datagrams reach a GRO Receiver intact: the
receiver splits each coalesced buffer by segment and every segment carries its own headers."""
import threading

import numpy as np

from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender


def test_shared_super_datagrams_reassemble_in_the_receiver():
    rng = np.random.default_rng(11)
    events = [rng.integers(0, 256, 1000, dtype=np.uint8).tobytes() for _ in range(1000)]
    events += [rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() for _ in range(100)]
    got = {}
    with Receiver(None, "127.0.0.1", 0, with_lb_header=True, queue_size=4096, rcvbuf=64 << 20) as rx:

        def drain():
            for _ in range(len(events)):
                ev = rx.recv(timeout=10)
                got[ev.event_number] = bytes(ev.payload)

        t = threading.Thread(target=drain)
        t.start()
        with Sender(f"ejfat://127.0.0.1:18008/lb/1?data=127.0.0.1:{rx.base_port}", sync=False) as tx:
            for i in range(0, len(events), 100):
                tx.send_many(events[i:i + 100])
            st = tx.stats()
        t.join(30)
        rs = rx.stats()
    assert got == dict(enumerate(events))
    # 1000 B events: 62 per 64 KiB super-datagram, 2 sends per call of 100; each 3000 B event is
    # its own super-datagram (its short tail closes it)
    assert st.gso and st.messages == 10 * 2 + 100
    assert rs.bad_headers == rs.duplicates == rs.lost == 0
