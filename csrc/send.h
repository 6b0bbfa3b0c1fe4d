/* Batched UDP send of EJFAT events: sendmmsg, with UDP GSO (UDP_SEGMENT) when the kernel and the
 * route take it. Payload bytes are never copied in user space: each datagram is an iovec pair
 * (36-byte LB+RE header from a reusable table, slice of the caller's buffer); with GSO, one
 * message carries a run of such pairs of one length (the last may be shorter) to one destination,
 * and the kernel cuts the concatenation every that many bytes. A run may span events, so equal
 * small events share super-datagrams as the fragments of a large one do.
 *
 * A context is not thread-safe: one caller at a time (the Python shell holds a lock). */
#ifndef EJLB_SEND_H
#define EJLB_SEND_H
#include <stdint.h>
#include "ejlb_facts.h" /* EJLB_UDP_MAX_SEGMENTS */

/* EJLB_CDEF_BEGIN */
#define EJLB_TX_GSO_OFF 0
#define EJLB_TX_GSO_ON 1

typedef struct ejlb_tx ejlb_tx;

typedef struct {
    uint64_t events;      /* events handed to ejlb_tx_send */
    uint64_t datagrams;   /* datagrams the kernel accepted (GSO segments counted one by one) */
    uint64_t bytes;       /* UDP payload bytes accepted (headers included) */
    uint64_t messages;    /* UDP sends the kernel accepted (a GSO super-datagram counts once) */
    uint64_t syscalls;    /* sendmmsg/sendmsg calls */
    uint64_t send_errors; /* datagrams dropped because the kernel refused them */
    int32_t last_errno;   /* errno of the latest refusal, 0 if none */
    int32_t gso;          /* 1 while GSO is in use; drops to 0 for good on the first refusal */
} ejlb_tx_stats;

typedef struct {
    const void *data;      /* event bytes (may be NULL when len == 0) */
    uint64_t len;          /* < 2^32 (checked by the caller) */
    uint64_t tick;
    uint64_t event_number;
    uint16_t entropy;      /* v2 entropy / v3 port_select */
    uint16_t slot_select;  /* v3 only */
    uint16_t data_id;
    uint16_t dport;        /* destination UDP port, host order */
} ejlb_tx_event;

/* family: AF_INET or AF_INET6 (numeric values of this platform); addr: 4 or 16 bytes, network
 * order. fragment: event bytes per datagram. segments: full-size datagrams per GSO message
 * (1..64); segments * (fragment + 36) also bounds every message's bytes (16-bit IP length).
 * copy != 0 gathers every message into one contiguous staging buffer instead of iovec pairs
 * (only to measure what zero-copy saves). Returns NULL on bad arguments or out of memory. */
ejlb_tx *ejlb_tx_new(int family, const uint8_t *addr, uint32_t scope_id, int lb_version,
                     uint32_t fragment, uint32_t segments, int gso, int copy);
void ejlb_tx_free(ejlb_tx *tx);

/* Send n events on socket fd (blocking UDP socket of the right family). Returns the number of
 * datagrams the kernel accepted; refusals are counted in the stats, never stop the batch. */
int64_t ejlb_tx_send(ejlb_tx *tx, int fd, const ejlb_tx_event *events, int n);

/* One event without building an ejlb_tx_event in the caller: the fast path of Sender.send. */
int64_t ejlb_tx_send1(ejlb_tx *tx, int fd, const void *data, uint64_t len, uint64_t tick,
                      uint64_t event_number, uint16_t entropy, uint16_t slot_select,
                      uint16_t data_id, uint16_t dport);

void ejlb_tx_get_stats(const ejlb_tx *tx, ejlb_tx_stats *out);
/* EJLB_CDEF_END */
#endif
