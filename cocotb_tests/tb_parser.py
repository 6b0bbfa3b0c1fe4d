"""Bench of ejlb_parser alone (stage 1, combinational), parametrised by HEADER_BYTES: every field it
produces is compared with the reference model's parse() (ejlb.dataplane.model) on the conformance
corpus, 802.1Q and IPv4-option frames, frames longer than the capture, and truncations."""
from __future__ import annotations

import ipaddress
import os
import random

import cocotb
from cocotb.triggers import Timer

from ejlb.dataplane import corpus, model

HEADER_BYTES = int(os.environ.get("EJLB_HEADER_BYTES", "104"))
N = int(os.environ.get("EJLB_CORPUS_N", "2000"))


def extra_frames(rng: random.Random) -> list[bytes]:
    """What the corpus has few of: tags, IPv4 options, long frames, every truncation of a header."""
    v4 = (ipaddress.ip_address("10.1.1.1"), ipaddress.ip_address("10.2.2.2"))
    v6 = (ipaddress.ip_address("fd00::1"), ipaddress.ip_address("fd00::2"))
    out = []
    for src, dst in (v4, v6):
        for vlan in (None, 7):
            for n in (0, 1, 15, 16, 100, 1500, 8900):
                payload = bytes(rng.randrange(256) for _ in range(min(n, 64))) + bytes(max(0, n - 64))
                opts = [b""] + ([bytes(4), bytes(40)] if src.version == 4 else [])
                for o in opts:
                    out.append(corpus.build_frame(src, dst, payload, vlan=vlan, ip_options=o, dport=rng.randrange(1 << 16)))
    whole = out[len(out) // 2]
    out += [whole[:k] for k in range(0, 100, 3)]  # truncated inside every header
    out += [whole + bytes(20)]  # Ethernet padding after the IP packet
    return out


async def check(dut, frame: bytes) -> bool:
    """Drives one frame; True when both parsed it (fields compared), False when both refused it."""
    cap = frame[:HEADER_BYTES]
    dut.hdr.value = int.from_bytes(cap.ljust(HEADER_BYTES, b"\0"), "little")  # byte k at hdr[8k+:8]
    dut.seen.value = len(cap)
    dut.ended.value = int(len(frame) <= HEADER_BYTES)
    await Timer(1, unit="ns")
    # a frame longer than the capture is judged against its real length by the egress (need_len)
    got_ok = bool(dut.ok.value) and len(frame) >= int(dut.need_len.value)
    try:
        p = model.parse(frame)
    except model.ParseError as e:
        assert not got_ok, f"parser accepted what the model refuses ({e}): {frame.hex()}"
        return False
    assert got_ok, f"parser refused a frame the model parses: {frame.hex()}"
    padded = cap.ljust(HEADER_BYTES, b"\0")
    want = dict(l3=p.l3, is6=int(p.ip_version == 6), udp=p.udp, ulen=model._u16(frame, p.udp + 4), src=int(p.src),
                dst=int(p.dst), ttl=p.ttl, dport=p.dport, ucsum=p.udp_checksum, need_len=p.end,
                lbh=int.from_bytes(padded[p.payload:p.payload + 16], "big"))
    got = {k: int(getattr(dut, k).value) for k in want}
    assert got == want, f"{frame.hex()}: {got} != {want}"
    return True


@cocotb.test()
async def test_parser_agrees_with_the_model(dut):
    rng = random.Random(HEADER_BYTES)
    frames = [f for f, _ in corpus.frames(N, seed=HEADER_BYTES)] + extra_frames(rng)
    parsed = 0
    for frame in frames:
        parsed += await check(dut, frame)
    dut._log.info("HEADER_BYTES=%d: %d frames agree with model.parse (%d parsed)", HEADER_BYTES, len(frames), parsed)
    assert len(frames) // 2 < parsed < len(frames)  # both outcomes exercised, fields compared on most
