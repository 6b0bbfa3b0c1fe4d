/* Native receive core of ejlb.Receiver: GIL-free receive threads (recvmmsg + UDP GRO, plain
 * recvmmsg fallback), reassembly of RE fragments into pooled buffers, a bounded queue of completed
 * events, timeouts, a byte cap with eviction, counters and a bounded log of lost events.
 *
 * Sockets are created, bound and configured by Python (src/ejlb/shim/receiver.py) and handed over
 * as fds; this file never closes them. Each thread owns a disjoint subset of the sockets and its own
 * reassembly table: all fragments of one event carry the same entropy, hence reach the same port,
 * hence the same thread, so the hot path takes no lock. The byte cap is shared (one atomic
 * counter); the pending-event cap is split evenly over the threads.
 *
 * For tests, ejlb_rx_feed/ejlb_rx_expire drive the reassembler of one thread directly with
 * datagram bytes and an explicit clock (only while the threads are not running).
 *
 * The parts (buffer pool, interval set, reassembler, speculative placement, threads) are listed in
 * recv_core.h. */
#ifndef EJLB_RECV_H
#define EJLB_RECV_H
#include <stddef.h>
#include <stdint.h>
#include "ejlb_facts.h"

/* EJLB_CDEF_BEGIN */
#define EJLB_RX_OK 1
#define EJLB_RX_TIMEOUT 0
#define EJLB_RX_CLOSED 2
#define EJLB_RX_LOST_TIMEOUT 1
#define EJLB_RX_LOST_EVICTED 2

typedef struct ejlb_rx ejlb_rx;

typedef struct {
    ejlb_sendstate totals; /* the seven EJFAT SendState totals (generated: ejlb_facts.h) */
    /* ejlb's own */
    uint64_t bad_headers;   /* too short, or LB/RE header invalid */
    uint64_t bad_fragments; /* offset/length do not fit the event, length changed, event too big */
    uint64_t duplicates;    /* fragments whose bytes were all received already, or late */
    uint64_t overlaps;      /* fragments that partially overlap received bytes (new bytes kept) */
    uint64_t lost;          /* incomplete events given up after the timeout */
    uint64_t evicted;       /* incomplete events dropped to respect the byte/event caps: those that
                             * received new bytes least recently first */
    uint64_t gro_buffers;   /* receive buffers that held more than one segment */
    uint64_t cpu_ns;        /* CPU time of the receive threads (CLOCK_THREAD_CPUTIME_ID), summed */
    uint64_t placed;        /* datagrams received straight into their event buffer (no copy) */
    uint64_t evicted_byte_cap;  /* of evicted: to fit max_pending_bytes */
    uint64_t evicted_event_cap; /* of evicted: to fit max_pending_events */
} ejlb_rx_stats;

typedef struct {
    uint64_t event_number;
    uint16_t data_id;
    uint32_t length;    /* claimed total length */
    uint32_t fragments; /* fragments received */
    uint64_t bytes;     /* distinct event bytes received */
    int reason;         /* EJLB_RX_LOST_TIMEOUT or EJLB_RX_LOST_EVICTED */
} ejlb_rx_lost_event;

typedef struct {
    uint64_t event_number;
    uint16_t data_id;
    uint32_t length;
    uint8_t *data; /* release with ejlb_buf_release (NULL when length is 0) */
} ejlb_rx_event;

typedef struct {
    int threads;                 /* receive threads, 1..nfds */
    int with_lb_header;          /* datagrams start with the LB header */
    uint64_t timeout_us;         /* from an event's first fragment until it is given up as lost */
    uint64_t max_pending_bytes;  /* bytes held by incomplete events (length + overhead), all threads */
    uint32_t max_pending_events; /* incomplete events, split evenly over the threads (>= threads) */
    uint32_t queue_size;         /* completed events waiting for the application (>= 1) */
    uint32_t lost_log_size;      /* recent lost events kept for ejlb_rx_lost */
} ejlb_rx_options;

/* fds: nfds bound UDP sockets; socket i is served by thread i % threads. Returns NULL and writes a
 * message to err on failure. The threads start with ejlb_rx_start. */
ejlb_rx *ejlb_rx_new(const int *fds, int nfds, const ejlb_rx_options *opt, char *err, size_t errlen);
int ejlb_rx_start(ejlb_rx *rx, char *err, size_t errlen);
/* Stops and joins the threads, then wakes every ejlb_rx_next waiter with EJLB_RX_CLOSED. Idempotent. */
void ejlb_rx_stop(ejlb_rx *rx);
/* Stops, releases every held buffer and frees rx. No call may be in progress or follow. */
void ejlb_rx_free(ejlb_rx *rx);

/* Next completed event. timeout_ms < 0 waits forever. Runs without the GIL. */
int ejlb_rx_next(ejlb_rx *rx, int timeout_ms, ejlb_rx_event *out);
/* Same, but takes up to max ready events at once (at least one on EJLB_RX_OK) into out[0..*count). */
int ejlb_rx_next_many(ejlb_rx *rx, int timeout_ms, ejlb_rx_event *out, int max, int *count);
uint32_t ejlb_rx_queue_depth(ejlb_rx *rx);
uint32_t ejlb_rx_queue_capacity(ejlb_rx *rx);
void ejlb_rx_get_stats(ejlb_rx *rx, ejlb_rx_stats *out);
/* Copies lost events with sequence numbers >= since (oldest still logged first) into out[0..max);
 * returns how many and stores the sequence number to ask for next in *next. */
int ejlb_rx_lost(ejlb_rx *rx, uint64_t since, ejlb_rx_lost_event *out, int max, uint64_t *next);
int ejlb_rx_gro_enabled(int fd);

/* test drive of thread 0's reassembler: one receive buffer (segment size seg, 0 = one datagram) */
void ejlb_rx_feed(ejlb_rx *rx, const uint8_t *buf, size_t len, size_t seg, uint64_t now_us);
void ejlb_rx_expire(ejlb_rx *rx, uint64_t now_us);
/* event buffers: bufpool.h */
/* EJLB_CDEF_END */
#endif
