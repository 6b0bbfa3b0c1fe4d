"""`Tables` <-> SmartNIC P4 table rules: the one place where the deployed encodings live.

ESnet's SmartNIC API (docs/smartnic-p4.md) programs the LB as seven P4 tables of match/action rules;
ejlb's data planes take the six-table model of `ejlb.dataplane.tables`. This module is pure:

    encode(tables)            -> {identity: Rule}, the rules udplbd2 would write for those tables
    changes(old, new, diff)   -> Plan of insertions, updates and deletions, only for what `diff` touched
    decode(rules)             -> Tables (raises RuleSetError when no data plane could hold the set)
    parse_rule(pb) / to_pb()  -> protobuf TableRule <-> Rule, with the API's error codes

A Rule keeps every match as (key, mask) integers, so identity (table + matches) is one tuple.

Choices where the two models differ (each keeps forwarding identical, checked by tests):
- The newest epoch of an LB is a catch-all `/0` at priority 63 with no range rules (udplbd2's form);
  decoded, a catch-all without ranges is `EpochRange(0, 0, catch_all=True)`: "only what no range takes".
- A range is cut into aligned power-of-two prefixes, none wider than 2^63, so no range is ever `/0`.
- The FPGA has one port MAC: every LB of a rule set shares it (`encode` refuses differing MACs).
- Slot selection (bits, xor) is per LB in ejlb and per epoch rule in P4: every epoch rule of an LB
  carries its LB's values; decoding requires them to agree.
- A removed member is two `drop` rules (IPv4 and IPv6 EtherTypes); decoded it is a drop Member with
  address 0.0.0.0, since a drop never uses one.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ejlb.dataplane.tables import (
    MAX_MEMBERS, NUM_EPOCHS, NUM_LBS, TICK_MAX, UNASSIGNED, EpochRange, LBInstance, Member, TableDiff, Tables,
)
from ejlb.errors import EjlbError
from ejlb.node import sn_p4_v2_pb2 as pb
from ejlb.wire import CALENDAR_SLOTS, SLOT_BITS

# ---------------------------------------------------------------------------------------------
# The schema, as data: table -> size, key fields (name, width, P4 match kind), actions (params).

EXACT, FIELD_MASK, LPM = "exact", "field_mask", "lpm"

MAC_DST = "mac_dst_filter_table"
IP_DST = "ip_dst_filter_table"
IPV4_SRC = "ipv4_src_filter_table"
IPV6_SRC = "ipv6_src_filter_table"
MEMBER_INFO = "member_info_lookup_table"
CALENDAR = "load_balance_calendar_table"
EPOCH = "epoch_assign_table"

ETH_IPV4, ETH_ARP, ETH_IPV6 = 0x800, 0x806, 0x86DD
BROADCAST_MAC = 0xFFFF_FFFF_FFFF
ALL_NODES_MAC = 0x3333_0000_0001
SOLICITED_NODE = int(ipaddress.IPv6Address("ff02::1:ff00:0"))  # + the low 24 bits of the address
CATCH_ALL_PRIORITY = 63


@dataclass(frozen=True)
class Field:
    name: str
    width: int
    kind: str
    full: int = field(init=False, repr=False)  # the all-ones mask

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", (1 << self.width) - 1)


@dataclass(frozen=True)
class Table:
    name: str
    size: int
    fields: tuple[Field, ...]
    actions: Mapping[str, tuple[tuple[str, int], ...]]


_PORT = Field("snmeta.ingress_port", 4, FIELD_MASK)
_LB = Field("meta_lb_id", 3, EXACT)

SCHEMA: dict[str, Table] = {t.name: t for t in (
    Table(MAC_DST, 64, (_PORT, Field("ethernet.dstAddr", 48, EXACT)), {"set_mac_sa": (("mac_sa", 48),)}),
    Table(IP_DST, 64, (_PORT, Field("ethernet.etherType", 16, EXACT), Field("meta_ip_da", 128, EXACT)),
          {"set_ip_sa": (("ip_sa", 128), ("lb_id", 3))}),
    Table(IPV4_SRC, 256, (_LB, Field("ipv4.srcAddr", 32, EXACT)), {"allow_ip_src": ()}),
    Table(IPV6_SRC, 256, (_LB, Field("ipv6.srcAddr", 128, EXACT)), {"allow_ip_src": ()}),
    Table(MEMBER_INFO, 2 * NUM_LBS * MAX_MEMBERS,
          (_LB, Field("ethernet.etherType", 16, EXACT), Field("meta_member_id", 16, EXACT)), {
              "do_ipv4_member_rewrite": (("mac_dst", 48), ("ip_dst", 32), ("udp_base", 16),
                                         ("port_select_bit_cnt", 5), ("keep_lb_header", 1)),
              "do_ipv6_member_rewrite": (("mac_dst", 48), ("ip_dst", 128), ("udp_base", 16),
                                         ("port_select_bit_cnt", 5), ("keep_lb_header", 1)),
              "drop": (),
          }),
    Table(CALENDAR, NUM_LBS * NUM_EPOCHS * CALENDAR_SLOTS,
          (_LB, Field("meta_epoch", 32, EXACT), Field("calendar_slot", 16, EXACT)),
          {"do_assign_member": (("member_id", 16),)}),
    Table(EPOCH, 1024, (_LB, Field("tick", 64, LPM)), {
        "do_assign_epoch": (("epoch", 32),),
        "do_assign_epoch_with_slot_sel_opts": (("epoch", 32), ("slot_select_bit_cnt", 5), ("slot_select_xor", 16)),
    }),
)}

# udplbd2's order of first appearance: insertions and updates go forward, deletions in reverse, so a
# frame never meets a calendar slot whose member is gone or an epoch whose calendar is not there yet.
TABLE_ORDER = (MAC_DST, IP_DST, IPV4_SRC, IPV6_SRC, MEMBER_INFO, CALENDAR, EPOCH)


class RuleError(EjlbError, ValueError):
    """One rule the API refuses: `code` is its ErrorCode, the message names table, field and value."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class RuleSetError(EjlbError, ValueError):
    """A set of individually valid rules that no ejlb data plane can hold (names what and why)."""


@dataclass(frozen=True)
class Rule:
    table: str
    matches: tuple[tuple[int, int], ...]  # (key, mask) per key field, key already masked
    action: str
    params: tuple[int, ...] = ()
    priority: int = 0

    @property
    def identity(self) -> tuple:
        return (self.table, self.matches)

    @property
    def value(self) -> tuple:
        """What an update changes (priority is kept by the hardware and not compared, as udplbd2)."""
        return (self.action, self.params)


def _rule(table: str, keys: Iterable[int], action: str, params: Iterable[int] = (), priority: int = 0) -> Rule:
    """A rule of exact keys (wildcard ingress port where the table has one)."""
    fields = SCHEMA[table].fields
    keys = list(keys)
    if fields[0] is _PORT:
        keys.insert(0, None)
    matches = tuple((0, 0) if k is None else (k, f.full) for k, f in zip(keys, fields))
    return Rule(table, matches, action, tuple(params), priority)


# ---------------------------------------------------------------------------------------------
# Encoding: Tables -> rules

def _low24(ip: ipaddress.IPv6Address) -> int:
    return int(ip) & 0xFFFFFF


def lb_mac(tables: Tables) -> int | None:
    macs = {inst.mac for inst in tables.lbs.values()}
    if len(macs) > 1:
        raise RuleSetError(
            "lbs.mac=" + ",".join(sorted(m.hex(":") for m in macs)) + ": a SmartNIC has one port MAC; "
            "every LB instance it serves must share it"
        )
    return int.from_bytes(macs.pop(), "big") if macs else None


def lb_rules(tables: Tables) -> list[Rule]:
    """Destination filters: mac_dst (unicast, broadcast, all-nodes, solicited-node) and ip_dst."""
    mac = lb_mac(tables)
    if mac is None:
        return []
    macs = {mac, BROADCAST_MAC, ALL_NODES_MAC}
    out, owner = [], {}
    for inst in sorted(tables.lbs.values(), key=lambda i: i.lb_id):
        for ip in (inst.ipv4, inst.ipv6):
            if ip is not None and owner.setdefault(ip, inst.lb_id) != inst.lb_id:
                raise RuleSetError(f"lbs[{inst.lb_id}].ipv{ip.version}={ip}: LB {owner[ip]} has that address")
        if inst.ipv4 is not None:
            a = int(inst.ipv4)
            out += [_rule(IP_DST, (ETH_IPV4, a), "set_ip_sa", (a, inst.lb_id)),
                    _rule(IP_DST, (ETH_ARP, a), "set_ip_sa", (a, inst.lb_id))]
        if inst.ipv6 is not None:
            b = int(inst.ipv6)
            sol = SOLICITED_NODE | _low24(inst.ipv6)
            out += [_rule(IP_DST, (ETH_IPV6, b), "set_ip_sa", (b, inst.lb_id)),
                    _rule(IP_DST, (ETH_IPV6, sol), "set_ip_sa", (b, inst.lb_id))]
            macs.add(0x3333_FF00_0000 | _low24(inst.ipv6))
    return [_rule(MAC_DST, (m,), "set_mac_sa", (mac,)) for m in sorted(macs)] + out


def sender_rules(senders: Iterable[tuple[int, object]]) -> list[Rule]:
    return [_rule(IPV4_SRC if ip.version == 4 else IPV6_SRC, (lb_id, int(ip)), "allow_ip_src")
            for lb_id, ip in sorted(senders, key=lambda s: (s[0], s[1].version, int(s[1])))]


def prefixes(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as aligned blocks (block start, log2 size), each at most 2^63 wide."""
    out, s = [], start
    while s < end:
        k = min((s & -s).bit_length() - 1 if s else 63, 63)
        while s + (1 << k) > end:
            k -= 1
        out.append((s, k))
        s += 1 << k
    return out


def _epoch_action(epoch: int, inst: LBInstance | None) -> tuple[str, tuple[int, ...]]:
    if inst is None or (inst.slot_bits, inst.slot_xor) == (SLOT_BITS, 0):
        return "do_assign_epoch", (epoch,)
    return "do_assign_epoch_with_slot_sel_opts", (epoch, inst.slot_bits, inst.slot_xor)


def epoch_rules(tables: Tables, lb_id: int) -> list[Rule]:
    inst = tables.lbs.get(lb_id)
    out = []
    for epoch in range(NUM_EPOCHS):
        rng = tables.epochs.get((lb_id, epoch))
        if rng is None:
            continue
        action, params = _epoch_action(epoch, inst)
        if rng.catch_all:
            out.append(Rule(EPOCH, ((lb_id, 7), (0, 0)), action, params, CATCH_ALL_PRIORITY))
            if rng.end is None:
                continue  # the newest epoch: the catch-all alone, as udplbd2 writes it
        end = TICK_MAX + 1 if rng.end is None else rng.end
        for s, k in prefixes(rng.start, end):
            mask = TICK_MAX ^ ((1 << k) - 1)
            out.append(Rule(EPOCH, ((lb_id, 7), (s, mask)), action, params))
    return out


def calendar_rules(lb_id: int, epoch: int, calendar: Iterable[int], slots: Iterable[int] | None = None) -> list[Rule]:
    cal = tuple(calendar)
    idx = range(CALENDAR_SLOTS) if slots is None else slots
    return [_rule(CALENDAR, (lb_id, epoch, s), "do_assign_member", (cal[s],)) for s in idx]


def member_rules(lb_id: int, member_id: int, m: Member) -> list[Rule]:
    if m.drop:
        return [_rule(MEMBER_INFO, (lb_id, eth, member_id), "drop") for eth in (ETH_IPV4, ETH_IPV6)]
    v4 = m.ip.version == 4
    params = (int.from_bytes(m.mac, "big"), int(m.ip), m.base_port, m.port_bits, int(m.keep_lb_header))
    return [_rule(MEMBER_INFO, (lb_id, ETH_IPV4 if v4 else ETH_IPV6, member_id),
                  "do_ipv4_member_rewrite" if v4 else "do_ipv6_member_rewrite", params)]


def encode(tables: Tables) -> dict[tuple, Rule]:
    """Every rule of `tables`, keyed by identity."""
    rules = lb_rules(tables) + sender_rules(tables.senders)
    for (lb_id, mid), m in tables.members.items():
        rules += member_rules(lb_id, mid, m)
    for (lb_id, epoch), cal in tables.calendars.items():
        rules += calendar_rules(lb_id, epoch, cal)
    for lb_id in sorted({lb for lb, _ in tables.epochs}):
        rules += epoch_rules(tables, lb_id)
    return {r.identity: r for r in rules}


@dataclass
class Plan:
    """Rules to send, by table: insertions, updates (replace=true) and deletions (the old rules)."""

    inserts: dict[str, list[Rule]] = field(default_factory=dict)
    updates: dict[str, list[Rule]] = field(default_factory=dict)
    deletes: dict[str, list[Rule]] = field(default_factory=dict)

    def add(self, old: Iterable[Rule], new: Iterable[Rule]) -> None:
        before = {r.identity: r for r in old}
        for r in new:
            o = before.pop(r.identity, None)
            if o is None:
                self.inserts.setdefault(r.table, []).append(r)
            elif o.value != r.value:
                self.updates.setdefault(r.table, []).append(r)
        for r in before.values():
            self.deletes.setdefault(r.table, []).append(r)

    def batches(self) -> list[tuple[int, bool, str, list[Rule]]]:
        """(BatchOperation, replace, table, rules) in the deployed order: inserts, updates (insert with
        replace), then deletes in reverse table order."""
        out = [(pb.BOP_INSERT, False, t, self.inserts[t]) for t in TABLE_ORDER if self.inserts.get(t)]
        out += [(pb.BOP_INSERT, True, t, self.updates[t]) for t in TABLE_ORDER if self.updates.get(t)]
        out += [(pb.BOP_DELETE, False, t, self.deletes[t]) for t in reversed(TABLE_ORDER) if self.deletes.get(t)]
        return out

    def __len__(self) -> int:
        return sum(len(v) for d in (self.inserts, self.updates, self.deletes) for v in d.values())


def changes(old: Tables, new: Tables, d: TableDiff) -> Plan:
    """The rule changes that take a device from `old` to `new` (= tables.apply(old, d)); only the
    entries `d` touches are encoded, so a steady tick costs its changed slots, not 16 k rules."""
    plan = Plan()
    if d.set.get("lbs") or d.delete.get("lbs"):
        plan.add(lb_rules(old), lb_rules(new))
    if d.senders_add or d.senders_remove:
        plan.add(sender_rules(d.senders_remove), sender_rules(d.senders_add))
    for key in d.delete.get("members", ()):
        plan.add(member_rules(*key, old.members[key]), ())
    for key, m in d.set.get("members", {}).items():
        o = old.members.get(key)
        plan.add(member_rules(*key, o) if o else (), member_rules(*key, m))
    for key in d.delete.get("calendars", ()):
        plan.add(calendar_rules(*key, old.calendars[key]), ())
    for key, cal in d.set.get("calendars", {}).items():
        o = old.calendars.get(key)
        slots = None if o is None else [s for s in range(CALENDAR_SLOTS) if o[s] != cal[s]]
        plan.add(calendar_rules(*key, o, slots) if o else (), calendar_rules(*key, cal, slots))
    lbs = {lb for lb, _ in d.delete.get("epochs", ())} | {lb for lb, _ in d.set.get("epochs", {})}
    if d.set.get("lbs") or d.delete.get("lbs"):  # slot selection rides on every epoch rule
        lbs |= {lb for lb, _ in old.epochs} | {lb for lb, _ in new.epochs}
    for lb in sorted(lbs):
        plan.add(epoch_rules(old, lb), epoch_rules(new, lb))
    return plan


# ---------------------------------------------------------------------------------------------
# Decoding: rules -> Tables

def longest_prefix_spans(blocks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Aligned blocks (start, end, epoch), nested or disjoint as prefixes are, as the disjoint spans
    (start, end, epoch) that longest-prefix matching gives, neighbours of one epoch merged. Updates
    in the deployed order hold old and new prefixes at once (inserts come before deletes): the
    longer prefix wins, as in the TCAM where the controller gives ranges priority over the /0."""
    blocks = sorted(blocks, key=lambda b: (b[0], b[0] - b[1]))  # by start, wider first
    points = sorted({p for s, e, _ in blocks for p in (s, e)})
    out: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int, int]] = []
    i = 0
    for a, b in zip(points, points[1:]):
        while stack and stack[-1][1] <= a:  # nested: the innermost block ends first, on top
            stack.pop()
        while i < len(blocks) and blocks[i][0] <= a:
            stack.append(blocks[i])
            i += 1
        if not stack:
            continue
        epoch = stack[-1][2]
        if out and out[-1][1] == a and out[-1][2] == epoch:
            out[-1] = (out[-1][0], b, epoch)
        else:
            out.append((a, b, epoch))
    return out


def _ip(value: int, v6: bool):
    return ipaddress.IPv6Address(value) if v6 else ipaddress.IPv4Address(value)


def _key(rule: Rule, i: int) -> int:
    return rule.matches[i][0]


Rules = Mapping[str, Mapping[tuple, Rule]]


def decode(rules: Rules, memo: dict | None = None, ids: "MemberIds | None" = None) -> Tables:
    """The Tables a device holding `rules` (table name -> identity -> Rule) forwards by. With a
    `memo` (one dict kept by the caller), a part is decoded again only when one of the rule dicts it
    reads is a different object: a node replaces the dicts it writes and never mutates them. With
    `ids`, member ids on the wire (16 bits) become the data plane's (0..MAX_MEMBERS-1); without,
    they must already be those."""
    def part(fn, *tables):
        deps = tuple(rules.get(t, _EMPTY) for t in tables)
        if memo is not None:
            hit = memo.get(fn.__name__)
            if hit is not None and all(a is b for a, b in zip(hit[0], deps)):
                return hit[1]
        value = fn(*deps)
        if memo is not None:
            memo[fn.__name__] = (deps, value)
        return value

    mac = part(_port_mac, MAC_DST)
    addrs = part(_lb_addresses, IP_DST)
    ranges, slot_sel = part(_epoch_ranges, EPOCH)
    lbs = {}
    for lb_id, fam in addrs.items():
        bits, xor = slot_sel.get(lb_id, (SLOT_BITS, 0))
        lbs[lb_id] = LBInstance(lb_id, mac.to_bytes(6, "big"),
                                _ip(fam[4], False) if 4 in fam else None, _ip(fam[6], True) if 6 in fam else None,
                                slot_bits=bits, slot_xor=xor)
    calendars, members = part(_calendars, CALENDAR), part(_members, MEMBER_INFO)
    if ids is not None:
        calendars, members = ids.translate(calendars, members)
    try:
        return Tables(lbs=lbs, senders=part(_senders, IPV4_SRC, IPV6_SRC), epochs=ranges,
                      calendars=calendars, members=members)
    except ValueError as e:
        raise RuleSetError(str(e)) from None


class MemberIds:
    """Wire member ids -> data-plane member ids, per LB. The wire has 16 bits (udplbd2 sends session
    id mod 65535, which grows with every registration); ejlb's data planes hold MAX_MEMBERS. An id
    keeps its own number where that is free (so ejlb's control plane sees no remapping), else gets
    the lowest free one; it keeps it while any member or calendar rule uses it.

    `translate` computes the mapping for a rule set into `pending`; the caller `commit`s it once the
    set is accepted (or drops it)."""

    def __init__(self) -> None:
        self.local: dict[tuple[int, int], int] = {}  # (lb, wire id) -> data-plane id
        self.pending: dict[tuple[int, int], int] | None = None

    def translate(self, calendars: dict, members: dict) -> tuple[dict, dict]:
        in_use = set(members)
        for (lb, _), cal in calendars.items():
            in_use.update((lb, m) for m in set(cal) if m != UNASSIGNED)
        mapping = {k: v for k, v in self.local.items() if k in in_use}
        taken = {(lb, v) for (lb, _), v in mapping.items()}
        for lb, wire in sorted(in_use - mapping.keys()):
            local = wire if wire < MAX_MEMBERS and (lb, wire) not in taken else \
                next((i for i in range(MAX_MEMBERS) if (lb, i) not in taken), None)
            if local is None:
                raise RuleSetError(f"lb_id={lb}: more than {MAX_MEMBERS} member ids in use (wire id {wire})")
            mapping[(lb, wire)] = local
            taken.add((lb, local))
        self.pending = mapping
        if all(w == v for (_, w), v in mapping.items()):
            return calendars, members  # ejlb's own control plane: ids are already the data plane's
        cals = {(lb, e): tuple(m if m == UNASSIGNED else mapping[(lb, m)] for m in cal)
                for (lb, e), cal in calendars.items()}
        return cals, {(lb, mapping[(lb, w)]): m for (lb, w), m in members.items()}

    def commit(self) -> None:
        if self.pending is not None:
            self.local, self.pending = self.pending, None

    def wire(self) -> dict[tuple[int, int], int]:
        """(lb, data-plane id) -> wire id, for reporting counters by the ids the client knows."""
        return {(lb, v): w for (lb, w), v in self.local.items()}


_EMPTY: Mapping = {}


def _port_mac(mac_rules) -> int:
    mac = 0
    for r in mac_rules.values():
        dst, sa = _key(r, 1), r.params[0]
        if dst == sa and not dst >> 40 & 1:  # the unicast self-entry names the port MAC
            if mac and mac != dst:
                raise RuleSetError(f"{MAC_DST}: two unicast MACs {mac:#x} and {dst:#x}; a node has one port MAC")
            mac = dst
    return mac


def _lb_addresses(ip_rules) -> dict[int, dict[int, int]]:
    addrs: dict[int, dict[int, int]] = {}
    for r in ip_rules.values():
        eth, dst = _key(r, 1), _key(r, 2)
        sa, lb_id = r.params
        if eth == ETH_ARP:
            continue  # ARP answering is the NIC's business; the LB address comes from the IPv4 entry
        if eth == ETH_IPV6 and dst >> 24 == SOLICITED_NODE >> 24:
            continue  # solicited-node multicast for neighbour discovery
        if eth not in (ETH_IPV4, ETH_IPV6):
            raise RuleSetError(f"{IP_DST} etherType={eth:#x}: must be 0x800, 0x806 or 0x86dd")
        if sa != dst:
            raise RuleSetError(f"{IP_DST} meta_ip_da={dst:#x} ip_sa={sa:#x}: an LB answers from its own address")
        version = 4 if eth == ETH_IPV4 else 6
        if version == 4 and dst >> 32:
            raise RuleSetError(f"{IP_DST} meta_ip_da={dst:#x}: wider than IPv4 under etherType 0x800")
        prev = addrs.setdefault(lb_id, {}).setdefault(version, dst)
        if prev != dst:
            raise RuleSetError(f"{IP_DST} lb_id={lb_id}: two IPv{version} addresses {prev:#x} and {dst:#x}")
    return addrs


def _epoch_ranges(epoch_rules) -> tuple[dict, dict]:
    blocks: dict[int, list[tuple[int, int, int]]] = {}  # lb -> (start, end, epoch)
    catch_all: dict[int, int] = {}
    slot_sel: dict[int, tuple[int, int]] = {}
    for r in epoch_rules.values():
        lb_id, (start, mask) = _key(r, 0), r.matches[1]
        epoch = r.params[0]
        opts = tuple(r.params[1:]) or (SLOT_BITS, 0)
        if slot_sel.setdefault(lb_id, opts) != opts:
            raise RuleSetError(f"{EPOCH} lb_id={lb_id}: slot selection {opts} and {slot_sel[lb_id]} disagree")
        if mask == 0:
            catch_all[lb_id] = epoch
        else:
            blocks.setdefault(lb_id, []).append((start, start + (mask ^ TICK_MAX) + 1, epoch))
    ranges: dict[tuple[int, int], EpochRange] = {}
    for lb_id in sorted(set(blocks) | set(catch_all)):
        spans: dict[int, list[tuple[int, int]]] = {}
        for start, end, epoch in longest_prefix_spans(blocks.get(lb_id, [])):
            spans.setdefault(epoch, []).append((start, end))
        for epoch, parts in spans.items():
            if len(parts) > 1:
                raise RuleSetError(f"{EPOCH} lb_id={lb_id} epoch={epoch}: takes {len(parts)} separate tick "
                                   f"ranges (from {parts[0][1]:#x} to {parts[1][0]:#x} another epoch's); one range each")
            (start, end), = parts
            ranges[(lb_id, epoch)] = EpochRange(start, None if end > TICK_MAX else end, catch_all.get(lb_id) == epoch)
        if lb_id in catch_all and (lb_id, catch_all[lb_id]) not in ranges:
            ranges[(lb_id, catch_all[lb_id])] = EpochRange(0, 0, catch_all=True)
    return ranges, slot_sel


def _senders(v4_rules, v6_rules) -> frozenset:
    return frozenset((r.matches[0][0], _ip(r.matches[1][0], v6)) for v6, table in ((False, v4_rules), (True, v6_rules))
                     for r in table.values())


def _calendars(cal_rules) -> dict[tuple[int, int], tuple[int, ...]]:
    cals: dict[tuple[int, int], list[int]] = {}
    for r in cal_rules.values():
        (lb_id, _), (epoch, _), (slot, _) = r.matches
        cal = cals.get((lb_id, epoch))
        if cal is None:
            cal = cals[(lb_id, epoch)] = [UNASSIGNED] * CALENDAR_SLOTS
        cal[slot] = r.params[0]
    return {k: tuple(v) for k, v in cals.items()}


def _members(member_rules) -> dict[tuple[int, int], Member]:
    kinds: dict[tuple[int, int], dict[int, Rule]] = {}
    for r in member_rules.values():
        kinds.setdefault((_key(r, 0), _key(r, 2)), {})[_key(r, 1)] = r
    members = {}
    for key, by_eth in kinds.items():
        rewrites = [r for r in by_eth.values() if r.action != "drop"]
        if len(rewrites) > 1:
            raise RuleSetError(f"{MEMBER_INFO} lb_id={key[0]} member_id={key[1]}: an IPv4 and an IPv6 "
                               "rewrite; a member has one address")
        if not rewrites:
            members[key] = Member(ipaddress.IPv4Address(0), 0, drop=True)
            continue
        r = rewrites[0]
        mac_dst, ip, base, bits, keep = r.params
        try:
            members[key] = Member(_ip(ip, r.action == "do_ipv6_member_rewrite"), base, bits,
                                  mac_dst.to_bytes(6, "big"), bool(keep))
        except ValueError as e:
            raise RuleSetError(f"{MEMBER_INFO} lb_id={key[0]} member_id={key[1]}: {e}") from None
    return members


def canonical(tables: Tables) -> Tables:
    """`tables` as decode(encode(tables)) gives them back: equal forwarding, normal form."""
    epochs = {}
    for key, r in tables.epochs.items():
        if r.catch_all and r.end is None:
            epochs[key] = EpochRange(0, 0, catch_all=True)
        elif r.catch_all or r.end is None or r.end > r.start:
            epochs[key] = EpochRange(0, 0, True) if r.catch_all and r.end == r.start else r
    with_epochs = {lb for lb, _ in epochs}
    lbs = {i: inst if i in with_epochs else LBInstance(i, inst.mac, inst.ipv4, inst.ipv6)
           for i, inst in tables.lbs.items() if inst.ipv4 is not None or inst.ipv6 is not None}
    members = {k: Member(ipaddress.IPv4Address(0), 0, drop=True) if m.drop else m
               for k, m in tables.members.items()}
    return Tables(lbs=lbs, senders=tables.senders, epochs=epochs, calendars=dict(tables.calendars), members=members)


# ---------------------------------------------------------------------------------------------
# Protobuf edge: TableRule <-> Rule, with the API's error codes

def parse_number(text: str) -> int:
    """The real agent's string numbers (GMP base 0): 0x.. hex, 0b.. binary, 0.. octal, else decimal."""
    s = text.strip()
    prefix = s[:2].lower()
    if prefix == "0x":
        digits, base = s[2:], 16
    elif prefix == "0b":
        digits, base = s[2:], 2
    elif len(s) > 1 and s.startswith("0"):
        digits, base = s[1:], 8
    else:
        digits, base = s, 10
    if not digits or not digits.isalnum() or "_" in digits:
        raise ValueError(text)
    return int(digits, base)


def _num(text: str, code: int, table: str, name: str) -> int:
    try:
        return parse_number(text)
    except ValueError:
        raise RuleError(code, f"{table}.{name}={text!r}: not a number (0x.. hex, 0b.. binary, 0.. octal or decimal)") from None


def parse_rule(msg: pb.TableRule, deleting: bool = False) -> Rule:
    """A protobuf TableRule as a Rule; RuleError names the table, field and value it refuses."""
    table = SCHEMA.get(msg.table_name)
    if table is None:
        raise RuleError(pb.EC_INVALID_TABLE_NAME,
                        f"table_name={msg.table_name!r}: unknown (known: {', '.join(TABLE_ORDER)})")
    t = table.name
    n = len(msg.matches)
    if n != len(table.fields):
        code = pb.EC_TABLE_RULE_TOO_FEW_MATCHES if n < len(table.fields) else pb.EC_TABLE_RULE_TOO_MANY_MATCHES
        raise RuleError(code, f"{t}: {n} matches, the table has {len(table.fields)} key fields")
    matches = []
    for f, m in zip(table.fields, msg.matches):
        kind = m.WhichOneof("type")
        where = f"{t}.{f.name}"
        if kind == "key_only":
            key, mask = _num(m.key_only.key, pb.EC_TABLE_RULE_MATCH_INVALID_KEY_FORMAT, t, f.name), f.full
        elif kind == "key_mask":
            key = _num(m.key_mask.key, pb.EC_TABLE_RULE_MATCH_INVALID_KEY_FORMAT, t, f.name)
            mask = _num(m.key_mask.mask, pb.EC_TABLE_RULE_MATCH_INVALID_MASK_FORMAT, t, f.name + " mask")
            if mask > f.full:
                raise RuleError(pb.EC_TABLE_RULE_MATCH_MASK_TOO_BIG, f"{where} mask={mask:#x}: wider than {f.width} bits")
            if f.kind == EXACT and mask != f.full:
                raise RuleError(pb.EC_TABLE_RULE_MATCH_INVALID_CONSTANT_MASK,
                                f"{where} mask={mask:#x}: an exact field takes the all-ones mask only")
            if f.kind == FIELD_MASK and mask not in (0, f.full):
                raise RuleError(pb.EC_TABLE_RULE_MATCH_INVALID_BITFIELD_MASK,
                                f"{where} mask={mask:#x}: must be 0 (any) or all ones")
            if f.kind == LPM and (f.full ^ mask) & ((f.full ^ mask) + 1):
                raise RuleError(pb.EC_TABLE_RULE_MATCH_INVALID_PREFIX_MASK, f"{where} mask={mask:#x}: not a prefix")
        elif kind == "key_prefix" and f.kind == LPM:
            key = _num(m.key_prefix.key, pb.EC_TABLE_RULE_MATCH_INVALID_KEY_FORMAT, t, f.name)
            length = m.key_prefix.prefix_length
            if length > f.width:
                raise RuleError(pb.EC_TABLE_RULE_MATCH_MASK_TOO_WIDE,
                                f"{where} prefix_length={length}: the field has {f.width} bits")
            mask = f.full ^ ((1 << (f.width - length)) - 1)
        elif kind in ("key_prefix", "range", "unused"):
            raise RuleError(pb.EC_TABLE_RULE_MATCH_INVALID_FORMAT, f"{where}: a {kind} match on a {f.kind} field")
        else:
            raise RuleError(pb.EC_UNKNOWN_TABLE_RULE_MATCH_TYPE, f"{where}: match type unset")
        if key > f.full:
            raise RuleError(pb.EC_TABLE_RULE_MATCH_KEY_TOO_BIG, f"{where} key={key:#x}: wider than {f.width} bits")
        matches.append((key & mask, mask))
    if deleting:  # deletes carry the old action; only the identity counts
        return Rule(t, tuple(matches), "", (), msg.priority)
    spec = table.actions.get(msg.action.name)
    if spec is None:
        raise RuleError(pb.EC_INVALID_ACTION_NAME, f"{t} action={msg.action.name!r}: unknown for this table "
                                                   f"(known: {', '.join(table.actions)})")
    values = msg.action.parameters
    if len(values) != len(spec):
        code = (pb.EC_TABLE_RULE_TOO_FEW_ACTION_PARAMETERS if len(values) < len(spec)
                else pb.EC_TABLE_RULE_TOO_MANY_ACTION_PARAMETERS)
        raise RuleError(code, f"{t} action {msg.action.name}: {len(values)} parameters, it takes {len(spec)}")
    params = []
    for (name, width), v in zip(spec, values):
        x = _num(v.value, pb.EC_TABLE_RULE_INVALID_ACTION_PARAMETER_FORMAT, t, name)
        if x >> width:
            raise RuleError(pb.EC_TABLE_RULE_PARAM_TOO_BIG,
                            f"{t}.{msg.action.name}.{name}={v.value!r}: wider than {width} bits")
        params.append(x)
    rule = Rule(t, tuple(matches), msg.action.name, tuple(params), msg.priority)
    _check_fits(rule)
    return rule


def _check_fits(r: Rule) -> None:
    """What the P4 widths allow but ejlb's tables cannot hold: refused per rule, naming the limit."""
    bad = None
    if r.table == EPOCH and r.params[0] >= NUM_EPOCHS:
        bad = f"epoch={r.params[0]}: this node holds epochs 0..{NUM_EPOCHS - 1}"
    elif r.table == CALENDAR and _key(r, 1) >= NUM_EPOCHS:
        bad = f"meta_epoch={_key(r, 1)}: this node holds epochs 0..{NUM_EPOCHS - 1}"
    elif r.table == CALENDAR and _key(r, 2) >= CALENDAR_SLOTS:
        bad = f"calendar_slot={_key(r, 2)}: slots are 0..{CALENDAR_SLOTS - 1}"
    elif r.table == MEMBER_INFO and _key(r, 1) not in (ETH_IPV4, ETH_IPV6):
        bad = f"etherType={_key(r, 1):#x}: members are 0x800 (IPv4) or 0x86dd (IPv6)"
    elif r.table == MEMBER_INFO and r.action != "drop" and (
            (_key(r, 1) == ETH_IPV4) != (r.action == "do_ipv4_member_rewrite")):
        raise RuleError(pb.EC_TABLE_RULE_INVALID_ACTION_FOR_TABLE,
                        f"{MEMBER_INFO} etherType={_key(r, 1):#x}: action {r.action} rewrites the other family")
    if bad:
        raise RuleError(pb.EC_FAILED_INSERT_TABLE_RULE, f"{r.table} {bad}")


def _hex(x: int) -> str:
    return f"{x:#x}"  # udplbd2's form: lowercase, no padding, "0x0" for zero


def to_pb(rule: Rule, replace: bool = False) -> pb.TableRule:
    """A Rule as udplbd2 writes it: exact keys as key_only, the port wildcard as key_mask, LPM as key_prefix."""
    matches = []
    for f, (key, mask) in zip(SCHEMA[rule.table].fields, rule.matches):
        if f.kind == LPM:
            length = f.width - ((f.full ^ mask).bit_length())
            matches.append(pb.Match(key_prefix=pb.MatchKeyPrefix(key=_hex(key), prefix_length=length)))
        elif f.kind == FIELD_MASK:
            matches.append(pb.Match(key_mask=pb.MatchKeyMask(key=_hex(key), mask=_hex(mask))))
        else:
            matches.append(pb.Match(key_only=pb.MatchKeyOnly(key=_hex(key))))
    action = pb.Action(name=rule.action, parameters=[pb.ActionParameter(value=_hex(p)) for p in rule.params])
    return pb.TableRule(table_name=rule.table, priority=rule.priority, replace=replace, matches=matches, action=action)
