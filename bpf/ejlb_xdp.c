/* ejlb XDP data plane: the EJFAT load-balancer pipeline (docs/dataplane.md) on each received frame,
 * before the kernel allocates anything. Frame semantics are those of the FPGA and of the reference
 * model `ejlb.dataplane.model` (whose docstring settles every open choice); the oracle test runs the
 * 10 000-frame corpus through this program with BPF_PROG_TEST_RUN and compares bytes, verdicts and
 * counters with the model.
 *
 *   Ethernet (+ one 802.1Q tag) | IPv4 (options) or IPv6 | UDP | LB (16 B) | RE | fragment
 *   stage  1 parse               -> global drop_parse_fail
 *          2 destination filter  -> global drop_not_lb           (dests: bank, family, dst IP)
 *          3 port window, LB magic / version -> drop_no_lb_hdr / drop_bad_version
 *          4 sender allow-list   -> drop_blocked_src             (senders: bank, family, lb, src IP)
 *          5 TTL / hop limit <= 1 -> drop_ttl
 *          6 epoch: 4 tick ranges per LB + catch-all -> drop_epoch_miss
 *          7 slot = (slot_select ^ xor) & (2^bits - 1)
 *          8 calendar[lb][epoch][slot] -> drop_calendar_miss
 *          9 member[lb][id]      -> drop_member_miss
 *         10 rewrite: MACs, IPs, TTL, UDP port and length, LB header strip, IPv4 and UDP checksums,
 *            trailing Ethernet padding removed, re-padded to 60 bytes
 * Verdicts: XDP_TX (out where it came in, as the FPGA), XDP_REDIRECT for a member whose table entry
 * names another interface, XDP_DROP with a per-reason counter. A member entry without a MAC may ask
 * for the kernel's FIB and neighbour table instead (MEMBER_RESOLVE_MAC, set by the loader). Frames of no LB (stages 1-2) go to
 * the host stack instead when CTRL_PASS_OTHER is set, so that a host keeps its ARP, ND and SSH.
 *
 * Tables: every table map holds two banks; user space writes the bank that is not committed and
 * then flips ctrl.bank (the commit), so a frame reads ctrl.bank once and sees one whole table set.
 * Key and value layouts come from bpf/ejlb_xdp_layout.h, generated from ejlb.dataplane.xdp_layout;
 * header offsets from csrc/ejlb_wire.h, generated from ejlb.wire.
 *
 * Headers up to the end of the LB header must lie in the frame's first buffer (true of every
 * driver's linear area and of BPF_PROG_TEST_RUN's, >= 3 KB); a frame whose headers do not is counted
 * as a parse failure. Jumbo payloads may sit in further buffers (xdp.frags): the program never
 * reads payload bytes, because the UDP checksum is updated incrementally. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ejlb_wire.h"
#include "ejlb_xdp_layout.h"

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_IPV6 0x86DD
#define ETHERTYPE_VLAN 0x8100
#define IPPROTO_UDP_ 17
#define IPV4_HLEN 20
#define IPV4_MAX_HLEN 60
#define IPV6_HLEN 40
#define UDP_HLEN 8
#define MIN_FRAME 60
/* Ethernet + VLAN + IPv4 with options + UDP: the most bytes the LB-header strip moves */
#define MAX_HEADERS (ETH_HLEN + VLAN_HLEN + IPV4_MAX_HLEN + UDP_HLEN)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ejlb_xdp_ctrl);
} ctrl SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, EJLB_XDP_BANKS * EJLB_XDP_NUM_LBS);
    __type(key, __u32);
    __type(value, struct ejlb_xdp_lb);
} lbs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, EJLB_XDP_BANKS * EJLB_XDP_MAX_DESTS);
    __type(key, struct ejlb_xdp_addr_key);
    __type(value, __u32);
} dests SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, EJLB_XDP_BANKS * EJLB_XDP_MAX_SENDERS);
    __type(key, struct ejlb_xdp_addr_key);
    __type(value, __u8);
} senders SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, EJLB_XDP_BANKS * EJLB_XDP_NUM_LBS * EJLB_XDP_NUM_EPOCHS);
    __type(key, __u32);
    __type(value, struct ejlb_xdp_calendar);
} calendars SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, EJLB_XDP_BANKS * EJLB_XDP_NUM_LBS * EJLB_XDP_MAX_MEMBERS);
    __type(key, __u32);
    __type(value, struct ejlb_xdp_member);
} members SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, EJLB_XDP_NUM_LBS + 1);
    __type(key, __u32);
    __type(value, struct ejlb_xdp_stats);
} stats SEC(".maps");

/* Never read by the program. Updating a map-in-map makes the bpf() call return only after every
 * program that may be running has finished (the kernel's synchronize_rcu after such updates), which
 * is how the loader knows that no frame still reads the bank it has just uncommitted. */
struct fence_inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} fence_inner SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 1);
    __type(key, __u32);
    __array(values, struct fence_inner);
} fence SEC(".maps");

static __always_inline __u32 rd16(const __u8 *p)
{
    return (__u32)p[0] << 8 | p[1];
}

static __always_inline __u32 rd32(const __u8 *p)
{
    return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __always_inline void wr16(__u8 *p, __u32 v)
{
    p[0] = v >> 8;
    p[1] = v;
}

/* 16-bit one's-complement sum with end-around carry, as ejlb.dataplane.model.ones_sum: the words
 * are added as plain integers and folded at the end, so the bits equal the model's. */
static __always_inline __u32 fold(__u64 s)
{
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    return (__u32)s;
}

/* Adds the 16-bit words of n bytes at p to sum (n even, n <= 2 * max_words); runs on_fail when
 * they reach past data_end. A loop, not unrolled: unrolled twice it overflows the 512-byte stack. */
#define SUM_WORDS(sum, p, n, data_end, max_words, on_fail)                                   \
    do {                                                                                  \
        _Pragma("clang loop unroll(disable)")                                             \
        for (int i_ = 0; i_ < (max_words); i_++) {                                        \
            if (2 * i_ >= (n))                                                            \
                break;                                                                    \
            if ((p) + 2 * i_ + 2 > (__u8 *)(data_end))                                    \
                on_fail;                                                                  \
            (sum) += rd16((p) + 2 * i_);                                                  \
        }                                                                                 \
    } while (0)

/* Sum of the one's complements of the 16-bit words of n bytes (the words a rewrite removes) */
static __always_inline __u64 sum_not(const __u8 *p, int n)
{
    __u64 s = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < n; i += 2)
        s += ~rd16(p + i) & 0xFFFF;
    return s;
}

static __always_inline __u64 sum_plain(const __u8 *p, int n)
{
    __u64 s = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < n; i += 2)
        s += rd16(p + i);
    return s;
}

static __always_inline struct ejlb_xdp_stats *stats_entry(__u32 index)
{
    return bpf_map_lookup_elem(&stats, &index);
}

/* Stages 1-2 failed: count globally; drop (the FPGA) or hand to the host stack. */
static __always_inline int not_ours(__u32 counter, __u32 flags)
{
    struct ejlb_xdp_stats *st = stats_entry(EJLB_XDP_STATS_GLOBAL);

    if (st)
        st->lb[counter & 1] += 1;
    return (flags & EJLB_XDP_CTRL_PASS_OTHER) ? XDP_PASS : XDP_DROP;
}

static __always_inline int drop(struct ejlb_xdp_stats *st, __u32 code)
{
    __u32 i = EJLB_XDP_FIRST_DROP_COUNTER + code - EJLB_DROP_NO_LB_HDR;

    if (i < EJLB_XDP_N_LB_COUNTERS)
        st->lb[i] += 1;
    return XDP_DROP;
}

/* Stage 6, the model's Tables.epoch_for: the first range holding the tick, else the catch-all. */
static __always_inline int epoch_for(const struct ejlb_xdp_lb *lb, __u64 tick)
{
    int fallback = -1;

#pragma unroll
    for (int e = 0; e < EJLB_XDP_NUM_EPOCHS; e++) {
        const struct ejlb_xdp_epoch *r = &lb->epochs[e];
        if (!(r->flags & EJLB_XDP_EPOCH_VALID))
            continue;
        if (r->start <= tick && ((r->flags & EJLB_XDP_EPOCH_OPEN_END) || tick < r->end))
            return e;
        if (r->flags & EJLB_XDP_EPOCH_CATCH_ALL)
            fallback = e;
    }
    return fallback;
}

SEC("xdp.frags")
int ejlb_xdp(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct ejlb_xdp_ctrl *cp = bpf_map_lookup_elem(&ctrl, &zero);
    if (!cp)
        return XDP_ABORTED;
    /* one read of the commit index: every lookup below uses this bank */
    __u32 bank = *(volatile __u32 *)&cp->bank & 1;
    __u32 flags = cp->flags;

    __u32 rx = bpf_xdp_get_buff_len(ctx);
    __u8 *p = (__u8 *)(long)ctx->data;
    __u8 *data_end = (__u8 *)(long)ctx->data_end;

    /* --- stage 1: parse ------------------------------------------------------------------- */
    if (rx < ETH_HLEN || p + ETH_HLEN > data_end)
        return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
    __u32 l3 = ETH_HLEN;
    __u32 ethertype = rd16(p + 12);
    if (ethertype == ETHERTYPE_VLAN) {
        if (rx < ETH_HLEN + VLAN_HLEN || p + ETH_HLEN + VLAN_HLEN > data_end)
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        l3 = ETH_HLEN + VLAN_HLEN;
        ethertype = rd16(p + 16);
    }
    __u8 *ip = p + l3;
    __u32 hlen, total, ttl, family;
    if (ethertype == ETHERTYPE_IPV4) {
        if (rx < l3 + IPV4_HLEN || ip + IPV4_HLEN > data_end || ip[0] >> 4 != 4)
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        hlen = (ip[0] & 0xF) * 4;
        total = rd16(ip + 2);
        if (hlen < IPV4_HLEN || total < hlen + UDP_HLEN || l3 + total > rx)
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        __u64 hsum = 0;
        SUM_WORDS(hsum, ip, hlen, data_end, IPV4_MAX_HLEN / 2, return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags));
        if (fold(hsum) != 0xFFFF) /* the header checksum does not verify */
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        if ((rd16(ip + 6) & 0x3FFF) || ip[9] != IPPROTO_UDP_) /* a fragment, or not UDP */
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        ttl = ip[8];
        family = EJLB_XDP_FAMILY_V4;
    } else if (ethertype == ETHERTYPE_IPV6) {
        if (rx < l3 + IPV6_HLEN || ip + IPV6_HLEN > data_end || ip[0] >> 4 != 6)
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        hlen = IPV6_HLEN;
        total = IPV6_HLEN + rd16(ip + 4);
        if (total < IPV6_HLEN + UDP_HLEN || l3 + total > rx || ip[6] != IPPROTO_UDP_)
            return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
        ttl = ip[7];
        family = EJLB_XDP_FAMILY_V6;
    } else {
        return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);
    }
    __u8 *udp = ip + hlen;
    __u8 *h = udp + UDP_HLEN;             /* the LB header, if the datagram has room for one */
    __u32 end = l3 + total;               /* one past the IP packet; Ethernet padding follows */
    __u32 payload = l3 + hlen + UDP_HLEN; /* offset of h */
    if (h > data_end || (end - payload >= EJLB_LB_HEADER_LEN && h + EJLB_LB_HEADER_LEN > data_end))
        return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags); /* headers beyond the first buffer */
    __u32 ulen_old = rd16(udp + 4);
    if (ulen_old != total - hlen)
        return not_ours(EJLB_XDP_C_DROP_PARSE_FAIL, flags);

    /* --- stage 2: destination filter -------------------------------------------------------- */
    struct ejlb_xdp_addr_key key = {.bank = bank, .family = family};
    if (family == EJLB_XDP_FAMILY_V4)
        __builtin_memcpy(key.ip, ip + 16, 4);
    else if (ip + IPV6_HLEN <= data_end)
        __builtin_memcpy(key.ip, ip + 24, 16);
    __u32 *lb_idp = bpf_map_lookup_elem(&dests, &key);
    if (!lb_idp)
        return not_ours(EJLB_XDP_C_DROP_NOT_LB, flags);
    __u32 lb_id = *lb_idp;
    if (lb_id >= EJLB_XDP_NUM_LBS)
        return XDP_ABORTED;
    __u32 lb_index = bank * EJLB_XDP_NUM_LBS + lb_id;
    struct ejlb_xdp_lb *lb = bpf_map_lookup_elem(&lbs, &lb_index);
    struct ejlb_xdp_stats *st = stats_entry(lb_id);
    if (!lb || !st)
        return XDP_ABORTED;
    st->lb[EJLB_XDP_C_RX_PACKETS] += 1;
    st->lb[EJLB_XDP_C_RX_BYTES] += rx;

    /* --- stage 3: the FPGA's port window and the LB header ----------------------------------- */
    __u32 dport_old = rd16(udp + 2);
    if (dport_old < EJLB_XDP_DATA_PORT_MIN || dport_old > EJLB_XDP_DATA_PORT_MAX)
        return drop(st, EJLB_DROP_NO_LB_HDR);
    if (end - payload < EJLB_LB_HEADER_LEN)
        return drop(st, EJLB_DROP_NO_LB_HDR);
    if (h + EJLB_LB_HEADER_LEN > data_end) /* excluded by stage 1; for the verifier */
        return XDP_ABORTED;
    if (h[EJLB_LB_OFF_MAGIC] != EJLB_LB_MAGIC0 || h[EJLB_LB_OFF_MAGIC + 1] != EJLB_LB_MAGIC1)
        return drop(st, EJLB_DROP_NO_LB_HDR);
    __u32 version = h[EJLB_LB_OFF_VERSION];
    if (version != EJLB_LB_V2 && version != EJLB_LB_V3)
        return drop(st, EJLB_DROP_BAD_VERSION);
    st->lb[version == EJLB_LB_V2 ? EJLB_XDP_C_RX_V2 : EJLB_XDP_C_RX_V3] += 1;

    /* --- stage 4: sender allow-list ----------------------------------------------------------- */
    struct ejlb_xdp_addr_key skey = {.bank = bank, .family = family, .lb = lb_id};
    if (family == EJLB_XDP_FAMILY_V4)
        __builtin_memcpy(skey.ip, ip + 12, 4);
    else if (ip + IPV6_HLEN <= data_end)
        __builtin_memcpy(skey.ip, ip + 8, 16);
    if (!bpf_map_lookup_elem(&senders, &skey))
        return drop(st, EJLB_DROP_BLOCKED_SRC);

    /* --- stage 5: TTL / hop limit ------------------------------------------------------------- */
    if (ttl <= 1)
        return drop(st, EJLB_DROP_TTL);

    /* --- stages 6-9: epoch, slot, calendar, member ---------------------------------------------- */
    __u64 tick = (__u64)rd32(h + EJLB_LB_OFF_TICK) << 32 | rd32(h + EJLB_LB_OFF_TICK + 4);
    __u32 port_select = rd16(h + EJLB_LB_OFF_PORT_SELECT);
    __u32 slot_key = version == EJLB_LB_V2 ? (__u32)(tick & 0xFFFF) : rd16(h + EJLB_LB_OFF_SLOT_SELECT);
    int epoch = epoch_for(lb, tick);
    if (epoch < 0 || epoch >= EJLB_XDP_NUM_EPOCHS)
        return drop(st, EJLB_DROP_EPOCH_MISS);
    __u32 slot = (slot_key ^ lb->slot_xor) & ((1u << (lb->slot_bits & 31)) - 1);
    if (slot >= EJLB_XDP_SLOTS) /* slot_bits > 9: no calendar entry */
        return drop(st, EJLB_DROP_CALENDAR_MISS);
    __u32 cal_index = lb_index * EJLB_XDP_NUM_EPOCHS + epoch;
    struct ejlb_xdp_calendar *cal = bpf_map_lookup_elem(&calendars, &cal_index);
    if (!cal)
        return XDP_ABORTED;
    __u32 member_id = cal->slot[slot];
    if (member_id == EJLB_XDP_UNASSIGNED)
        return drop(st, EJLB_DROP_CALENDAR_MISS);
    if (member_id >= EJLB_XDP_MAX_MEMBERS)
        return drop(st, EJLB_DROP_MEMBER_MISS);
    __u32 member_index = lb_index * EJLB_XDP_MAX_MEMBERS + member_id;
    struct ejlb_xdp_member *m = bpf_map_lookup_elem(&members, &member_index);
    if (!m || m->family != family || (m->flags & EJLB_XDP_MEMBER_DROP))
        return drop(st, EJLB_DROP_MEMBER_MISS);

    /* A member without a MAC in the table (the control plane learns none: EJFAT's register carries
     * none) when the loader asked for resolution: the next hop's MAC, the egress interface's MAC and
     * the interface from the kernel's FIB and neighbour table. Unresolved (the loader has just
     * asked the kernel to resolve it) counts as a member miss. */
    __u8 dmac[6], smac[6];
    __u32 egress = m->ifindex;
    __builtin_memcpy(dmac, m->mac, 6);
    __builtin_memcpy(smac, lb->mac, 6);
    if (m->flags & EJLB_XDP_MEMBER_RESOLVE_MAC) {
        struct bpf_fib_lookup fib = {.l4_protocol = IPPROTO_UDP_, .ifindex = ctx->ingress_ifindex};
        if (family == EJLB_XDP_FAMILY_V4) {
            fib.family = 2; /* AF_INET */
            __builtin_memcpy(&fib.ipv4_src, lb->ipv4, 4);
            __builtin_memcpy(&fib.ipv4_dst, m->ip, 4);
        } else {
            fib.family = 10; /* AF_INET6 */
            __builtin_memcpy(fib.ipv6_src, lb->ipv6, 16);
            __builtin_memcpy(fib.ipv6_dst, m->ip, 16);
        }
        if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
            return drop(st, EJLB_DROP_MEMBER_MISS);
        __builtin_memcpy(dmac, fib.dmac, 6);
        __builtin_memcpy(smac, fib.smac, 6);
        egress = fib.ifindex;
    }

    /* --- stage 10: rewrite in place, then cut padding, strip the LB header, re-pad ------------ */
    __u32 strip = (m->flags & EJLB_XDP_MEMBER_KEEP_LB_HEADER) ? 0 : EJLB_LB_HEADER_LEN;
    __u32 ulen_new = ulen_old - strip;
    __u32 dport_new = (m->base_port + (port_select & ((1u << (m->port_bits & 15)) - 1))) & 0xFFFF;
    __u32 csum = rd16(udp + 6);
    /* UDP checksum, RFC 1624 eqn. 3 over what changes (the model's list of words): the old words
     * are summed before they are overwritten. */
    __u64 s = ~csum & 0xFFFF;
    s += (~ulen_old & 0xFFFF) * 2 + (~dport_old & 0xFFFF) + ulen_new * 2 + dport_new;
    if (strip)
        s += sum_not(h, EJLB_LB_HEADER_LEN);
    __builtin_memcpy(p, dmac, 6);
    __builtin_memcpy(p + 6, smac, 6);
    if (family == EJLB_XDP_FAMILY_V4) {
        __u64 addr_old = sum_not(ip + 12, 8), addr_new = sum_plain(lb->ipv4, 4) + sum_plain(m->ip, 4);
        s += addr_old + addr_new;
        /* IPv4 header checksum, updated like the UDP one: because stage 1 verified it, the update
         * gives the bits a recomputation would (the model recomputes), without a second pass over
         * the options. Changed words: total length, TTL|protocol, source, destination. */
        __u64 h4 = (~rd16(ip + 10) & 0xFFFF) + (~rd16(ip + 2) & 0xFFFF) + (~rd16(ip + 8) & 0xFFFF) + addr_old + addr_new;
        wr16(ip + 2, hlen + ulen_new);
        ip[8] = ttl - 1;
        __builtin_memcpy(ip + 12, lb->ipv4, 4);
        __builtin_memcpy(ip + 16, m->ip, 4);
        h4 += rd16(ip + 2) + rd16(ip + 8);
        wr16(ip + 10, ~fold(h4) & 0xFFFF);
    } else {
        if (ip + IPV6_HLEN > data_end)
            return XDP_ABORTED;
        /* the pseudo-header length is 32 bits: its high word is 0 before and after */
        s += 0xFFFF + sum_not(ip + 8, 32) + sum_plain(lb->ipv6, 16) + sum_plain(m->ip, 16);
        wr16(ip + 4, ulen_new);
        ip[7] = ttl - 1;
        __builtin_memcpy(ip + 8, lb->ipv6, 16);
        __builtin_memcpy(ip + 24, m->ip, 16);
    }
    wr16(udp + 2, dport_new);
    wr16(udp + 4, ulen_new);
    if (csum != 0) {
        __u32 c = ~fold(s) & 0xFFFF;
        wr16(udp + 6, c ? c : 0xFFFF);
    }

    if (rx > end && bpf_xdp_adjust_tail(ctx, (int)end - (int)rx))
        return XDP_ABORTED;
    if (strip) {
        /* move Ethernet..UDP 16 bytes up over the LB header, then start the frame there */
        __u8 hdr[MAX_HEADERS];
        if (payload < ETH_HLEN || payload > MAX_HEADERS)
            return XDP_ABORTED;
        if (bpf_xdp_load_bytes(ctx, 0, hdr, payload) || bpf_xdp_store_bytes(ctx, EJLB_LB_HEADER_LEN, hdr, payload))
            return XDP_ABORTED;
        if (bpf_xdp_adjust_head(ctx, EJLB_LB_HEADER_LEN))
            return XDP_ABORTED;
    }
    __u32 out_len = end - strip;
    if (out_len < MIN_FRAME) {
        if (bpf_xdp_adjust_tail(ctx, MIN_FRAME - out_len))
            return XDP_ABORTED;
        __u8 *q = (__u8 *)(long)ctx->data;
        __u8 *q_end = (__u8 *)(long)ctx->data_end;
        for (int i = 0; i < MIN_FRAME; i++) {
            if (i < out_len)
                continue;
            if (q + i + 1 > q_end)
                break;
            q[i] = 0;
        }
        out_len = MIN_FRAME;
    }
    st->member[member_id][EJLB_XDP_M_TX_PACKETS] += 1;
    st->member[member_id][EJLB_XDP_M_TX_BYTES] += out_len;
    if (egress && egress != ctx->ingress_ifindex)
        return bpf_redirect(egress, 0);
    return XDP_TX;
}

/* For the far end of a veth pair: frames sent there with XDP_TX are only received by a veth whose
 * peer runs an XDP program (or has GRO on), and this one hands them to the stack unchanged. It
 * takes multi-buffer frames, so that it does not cap the pair's MTU at one page. */
SEC("xdp.frags")
int ejlb_xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
