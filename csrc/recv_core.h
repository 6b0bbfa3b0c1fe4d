/* Internals of the native receiver shared by its parts (not part of the API, see recv.h):
 *
 *   bufpool.c      event buffers (process-wide pool)
 *   ivset.c        the interval set of received bytes of one event
 *   reassembler.c  per-thread pending events: lookup, eviction, the byte cap, the reassembly rules,
 *                  the queue of completed events and the lost log
 *   placement.c    one recvmmsg batch, with speculative placement straight into event buffers
 *   recv.c         receive threads, lifecycle and the API of recv.h
 *
 * Every part runs on one receive thread at a time (its rxthr_t), except the queue, the lost log and
 * the shared byte cap. */
#ifndef EJLB_RECV_CORE_H
#define EJLB_RECV_CORE_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "bufpool.h"
#include "counters.h"
#include "ivset.h"
#include "recv.h"
#include "wire.h"

#define BATCH 32            /* messages per recvmmsg */
#define DRAIN_BATCHES 8     /* full batches taken from one ready socket before polling again */
#define RXBUF 65536         /* one GRO buffer holds at most 64 KiB */
#define CTRL_LEN 64
#define DONE_SLOTS 4096     /* recently finished events, to recognise late fragments */
#define SPEC_MAX_SEGS EJLB_UDP_MAX_SEGMENTS /* speculative slots per message: a GRO buffer's segments */
#define SPEC_IOV (2 * SPEC_MAX_SEGS + 1)
/* Smaller fragments are cheaper to copy than to scatter: measured on loopback with GRO, 1436-byte
 * payload slots (MTU 1500) doubled the kernel's copy-out time (one short misaligned copy per slot)
 * and lost more than the saved memcpy, while 8952-byte slots (MTU 9000) are a clear gain. */
#define SPEC_MIN_PAYLOAD 4096

typedef struct {
    uint64_t evn, t0, charge;
    uint8_t *buf;
    ejlb_ivset rcvd; /* event bytes received */
    uint32_t length, got, nfrags;
    int32_t hnext, prev, next; /* hash chain; age list (oldest first: the timeout) */
    int32_t lprev, lnext;      /* progress list of its class (least recently progressed first) */
    uint16_t data_id;
    uint8_t lcls;              /* progress class: 0 = one fragment so far, 1 = more */
} pend_t;

typedef struct {
    uint64_t evn, t;
    uint16_t data_id;
    uint8_t valid;
} done_t;

/* Speculative direct placement (see rx_batch): what the next datagrams of one socket probably are,
 * learnt from the last datagram received on it. */
typedef struct {
    uint64_t evn;
    uint32_t next, L, nseg; /* next event offset, fragment payload size, segments per GRO buffer */
    uint16_t data_id;
    uint8_t on, streak; /* streak: the last batch was placed entirely in place */
} pred_t;

typedef struct {
    int32_t i;        /* pending event the slots point into */
    uint32_t P, N, last; /* event offset of slot 0, slots, length of slot N-1 (the others are L) */
} plan_t;

typedef struct rxthr {
    struct ejlb_rx *rx;
    pthread_t tid;
    int *fds, nfds;
    pend_t *ev;
    int32_t *bucket;
    uint32_t mask, cap_events, npend;
    int32_t free_head, head, tail;
    int32_t lhead[2], ltail[2]; /* progress lists, by class */
    int32_t last; /* event of the previous datagram: fragments come in runs */
    done_t *done;
    ejlb_rx_stats st; /* written only by this thread */
    struct mmsghdr *msgs;
    struct iovec *iov;
    uint8_t *data;
    uint8_t (*ctrl)[CTRL_LEN];
    pred_t *pred;       /* per socket */
    struct iovec *siov; /* BATCH * SPEC_IOV */
    plan_t plan[BATCH];
    size_t seg[BATCH];
} rxthr_t;

struct ejlb_rx {
    int nthreads, wakefd, with_lb, running, stop;
    uint64_t timeout_us;
    /* bytes held by incomplete events of all threads, against one cap: a thread makes room by
     * evicting its own oldest events (it cannot touch another thread's), so one busy thread may use
     * the whole budget while the others are idle */
    uint64_t pend_bytes, cap_bytes;
    rxthr_t *thr;
    /* completed events, shared by all threads */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    ejlb_rx_event *q;
    uint32_t qcap, qhead, qcount;
    int closed;
    uint64_t dequeued, enqueue_err;
    /* bounded log of lost events */
    pthread_mutex_t llock;
    ejlb_rx_lost_event *lost;
    uint32_t lost_cap;
    uint64_t lost_seq;
};

static inline uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* reassembler.c: the reassembly rules on one thread (only while it is not running, or from it) */
void rx_on_buffer(rxthr_t *t, const uint8_t *d, size_t len, size_t seg, uint64_t now);
void rx_commit(rxthr_t *t, int32_t i, uint32_t off, uint32_t flen, const uint8_t *src, uint64_t now);
void rx_expire(rxthr_t *t, uint64_t now);
int32_t rx_pend_find(rxthr_t *t, uint64_t evn, uint16_t id);
uint8_t *rx_pend_remove(rxthr_t *t, int32_t i, uint64_t now);

/* placement.c: one recvmmsg batch on socket `sock` of thread t */
int rx_batch(rxthr_t *t, int sock, int *full);
#endif
