/* Software LB fast path: an L4 forwarder for EJFAT datagrams (docs/dataplane.md, stages 3-10 as an
 * L4 forwarder can see them). Worker threads without the GIL receive with recvmmsg + UDP GRO on the
 * LB instances' data sockets, decide per datagram with the compiled tables, and send with
 * sendmmsg + UDP GSO (consecutive datagrams of one size to one member become one GSO send).
 *
 * Tables: Python fills a `struct ejlb_swlb_tables` (src/ejlb/dataplane/software.py compiles it from
 * the table model) and ejlb_swlb_install() copies it and swaps the workers' pointer atomically;
 * every receive batch uses one snapshot, and the old copy is freed after a grace period (RCU-style:
 * each worker's sequence number is odd while it holds a snapshot), so no datagram sees half an
 * update. */
#ifndef EJLB_SWLB_H
#define EJLB_SWLB_H
#include <stdint.h>
#include "ejlb_facts.h"
#include "ejlb_wire.h"

/* EJLB_CDEF_BEGIN */
/* NUM_LBS, NUM_EPOCHS, MAX_MEMBERS, the drop codes and the counter vectors: ejlb_facts.h */
#define EJLB_SWLB_MAX_SENDERS 512 /* allow-list entries per LB instance: SoftwareLB.max_senders */
#define EJLB_SWLB_MAX_THREADS 16
/* fast-path statistics (ejlb_swlb_stats) */
#define EJLB_SWLB_STAT_RECV_CALLS 0
#define EJLB_SWLB_STAT_SEND_CALLS 1
#define EJLB_SWLB_STAT_SEND_MSGS 2
#define EJLB_SWLB_STAT_SEND_ERRORS 3
#define EJLB_SWLB_STAT_GRO_SEGMENTS 4
#define EJLB_SWLB_STAT_GSO_FALLBACKS 5
#define EJLB_SWLB_STATS 6

struct ejlb_swlb_epoch {
    uint64_t start;
    uint64_t end;         /* exclusive; ignored when open_end */
    uint8_t valid;
    uint8_t open_end;
    uint8_t catch_all;
    uint8_t pad[5];
};

struct ejlb_swlb_member {
    uint8_t ip[16];       /* IPv6, or IPv4 in the last 4 bytes */
    uint16_t base_port;
    uint8_t family;       /* 0 = no entry, 4, 6 */
    uint8_t port_bits;
    uint8_t keep_lb_header;
    uint8_t drop;         /* explicit drop rule */
    uint8_t pad[2];
};

struct ejlb_swlb_lb {
    uint8_t present;
    uint8_t slot_bits;
    uint16_t slot_xor;
    uint32_t n_senders;
    struct ejlb_swlb_epoch epochs[EJLB_NUM_EPOCHS];
};

struct ejlb_swlb_tables {
    struct ejlb_swlb_lb lb[EJLB_NUM_LBS];
    uint16_t calendar[EJLB_NUM_LBS][EJLB_NUM_EPOCHS][EJLB_CALENDAR_SLOTS]; /* EJLB_UNASSIGNED (also: no calendar) */
    struct ejlb_swlb_member member[EJLB_NUM_LBS][EJLB_MAX_MEMBERS];
    uint8_t senders[EJLB_NUM_LBS][EJLB_SWLB_MAX_SENDERS][16];          /* sorted; IPv4 as ::ffff:a.b.c.d */
};

struct ejlb_swlb_verdict {
    int verdict;          /* ejlb.dataplane.tables.Drop */
    int version;          /* LB header version once known, else 0 */
    int epoch;
    int slot;
    int member_id;
    int dport;            /* member base + masked port_select */
    int strip;            /* bytes removed from the front of the payload (0 or 16) */
};

struct ejlb_swlb;

/* The pure decision for one datagram payload (LB header first) that arrived at LB `lb_id` over
 * IPv`family` from `src16` (16-byte form as in senders) with TTL / hop limit `ttl` (-1: unknown).
 * Returns the verdict code. */
int ejlb_swlb_decide(const struct ejlb_swlb_tables *t, int lb_id, int family, const uint8_t *src16, int ttl,
                     const uint8_t *payload, uint32_t len, struct ejlb_swlb_verdict *out);

struct ejlb_swlb *ejlb_swlb_new(int nthreads);
int ejlb_swlb_install(struct ejlb_swlb *h, const struct ejlb_swlb_tables *t);
int ejlb_swlb_add_socket(struct ejlb_swlb *h, int thread, int fd, int lb_id);
int ejlb_swlb_remove_socket(struct ejlb_swlb *h, int thread, int fd);
int ejlb_swlb_start(struct ejlb_swlb *h);
void ejlb_swlb_stop(struct ejlb_swlb *h);
void ejlb_swlb_free(struct ejlb_swlb *h);
/* Sums over threads into lb_out[EJLB_NUM_LBS][EJLB_LB_COUNTERS],
 * member_out[EJLB_NUM_LBS][EJLB_MAX_MEMBERS][EJLB_MEMBER_COUNTERS], glob_out[EJLB_DROP_CODES] (by drop code). */
void ejlb_swlb_counters(struct ejlb_swlb *h, uint64_t *lb_out, uint64_t *member_out, uint64_t *glob_out);
void ejlb_swlb_stats(struct ejlb_swlb *h, uint64_t *out);
/* The same for one worker thread (-EINVAL for a bad index). */
int ejlb_swlb_thread_stats(struct ejlb_swlb *h, int thread, uint64_t *out);
/* CPU time of each worker thread in ns (out[nthreads]; 0 before start). */
void ejlb_swlb_cpu_ns(struct ejlb_swlb *h, uint64_t *out);
/* EJLB_CDEF_END */
#endif
