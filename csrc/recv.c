/* Native receive core: see recv.h for the model. The Python oracle of the reassembly rules is
 * src/ejlb/shim/reassembly.py; tests/test_receiver_native.py checks that both agree. */
#define _GNU_SOURCE
#include "recv.h"
#include "wire.h"
#include "counters.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define BATCH 32            /* messages per recvmmsg */
#define DRAIN_BATCHES 8     /* full batches taken from one ready socket before polling again */
#define RXBUF 65536         /* one GRO buffer holds at most 64 KiB */
#define CTRL_LEN 64
#define DONE_SLOTS 4096     /* recently finished events, to recognise late fragments */
#define INLINE_IV 4         /* received-byte intervals kept without a heap allocation */
#define SPEC_MAX_SEGS 64    /* speculative slots per message (UDP GSO sends at most 64 segments) */
#define SPEC_IOV (2 * SPEC_MAX_SEGS + 1)
/* Smaller fragments are cheaper to copy than to scatter: measured on loopback with GRO, 1436-byte
 * payload slots (MTU 1500) doubled the kernel's copy-out time (one short misaligned copy per slot)
 * and lost more than the saved memcpy, while 8952-byte slots (MTU 9000) are a clear gain. */
#define SPEC_MIN_PAYLOAD 4096


static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ---- process-wide buffer pool -----------------------------------------------------------------
 * Power-of-two size classes, so that a steady stream of similar events reuses already faulted-in
 * memory instead of paying mmap + page faults per event. Buffers leave through Python objects that
 * may outlive the receiver, hence a global pool. */
#define POOL_MIN_SHIFT 12
#define POOL_MAX_SHIFT 28 /* buffers above 256 MiB are allocated and freed exactly */
#define POOL_DEPTH 16
#define POOL_CACHE_BYTES (256ull << 20)
#define BUF_HDR 64 /* keeps the payload 64-byte aligned; holds the size class */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool[POOL_MAX_SHIFT + 1][POOL_DEPTH];
static int pool_n[POOL_MAX_SHIFT + 1];
static uint64_t pool_bytes;

static uint8_t *buf_get(uint64_t n)
{
    int sh = POOL_MIN_SHIFT;
    while (sh < 40 && (1ull << sh) < n)
        sh++;
    void *base = NULL;
    if (sh <= POOL_MAX_SHIFT) {
        pthread_mutex_lock(&pool_lock);
        if (pool_n[sh] > 0) {
            base = pool[sh][--pool_n[sh]];
            pool_bytes -= 1ull << sh;
        }
        pthread_mutex_unlock(&pool_lock);
    }
    if (!base && posix_memalign(&base, 64, BUF_HDR + (sh <= POOL_MAX_SHIFT ? 1ull << sh : n)))
        return NULL;
    *(int *)base = sh;
    return (uint8_t *)base + BUF_HDR;
}

void ejlb_buf_release(uint8_t *data)
{
    if (!data)
        return;
    void *base = data - BUF_HDR;
    int sh = *(int *)base;
    if (sh <= POOL_MAX_SHIFT) {
        pthread_mutex_lock(&pool_lock);
        if (pool_n[sh] < POOL_DEPTH && pool_bytes + (1ull << sh) <= POOL_CACHE_BYTES) {
            pool[sh][pool_n[sh]++] = base;
            pool_bytes += 1ull << sh;
            base = NULL;
        }
        pthread_mutex_unlock(&pool_lock);
    }
    free(base);
}

uint64_t ejlb_buf_pooled_bytes(void)
{
    pthread_mutex_lock(&pool_lock);
    uint64_t n = pool_bytes;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

void ejlb_buf_pool_trim(void)
{
    pthread_mutex_lock(&pool_lock);
    for (int sh = 0; sh <= POOL_MAX_SHIFT; sh++)
        while (pool_n[sh] > 0)
            free(pool[sh][--pool_n[sh]]);
    pool_bytes = 0;
    pthread_mutex_unlock(&pool_lock);
}

/* ---- per-thread reassembly state ------------------------------------------------------------ */
typedef struct {
    uint32_t s, e; /* received bytes [s, e) */
} iv_t;

typedef struct {
    uint64_t evn, t0, charge;
    uint8_t *buf;
    iv_t *iv; /* sorted, disjoint, non-touching */
    iv_t iv_inline[INLINE_IV];
    uint32_t length, got, nfrags, niv, civ;
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

static uint32_t hkey(uint64_t evn, uint16_t id)
{
    uint64_t h = (evn ^ ((uint64_t)id << 47)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

static int32_t pend_find(rxthr_t *t, uint64_t evn, uint16_t id)
{
    int32_t i = t->last;
    if (i >= 0 && t->ev[i].evn == evn && t->ev[i].data_id == id)
        return i;
    for (i = t->bucket[hkey(evn, id) & t->mask]; i >= 0; i = t->ev[i].hnext)
        if (t->ev[i].evn == evn && t->ev[i].data_id == id)
            return t->last = i;
    return -1;
}

static int done_hit(rxthr_t *t, uint64_t evn, uint16_t id, uint64_t now)
{
    done_t *d = &t->done[hkey(evn, id) % DONE_SLOTS];
    /* entries expire after the event timeout so a sender that restarts its numbering is not
     * mistaken for late fragments forever */
    return d->valid && d->evn == evn && d->data_id == id && now - d->t < t->rx->timeout_us;
}

static void done_put(rxthr_t *t, uint64_t evn, uint16_t id, uint64_t now)
{
    done_t *d = &t->done[hkey(evn, id) % DONE_SLOTS];
    d->evn = evn;
    d->data_id = id;
    d->t = now;
    d->valid = 1;
}

static void log_lost(struct ejlb_rx *rx, const pend_t *p, int reason)
{
    if (!rx->lost_cap)
        return;
    pthread_mutex_lock(&rx->llock);
    ejlb_rx_lost_event *l = &rx->lost[rx->lost_seq % rx->lost_cap];
    l->event_number = p->evn;
    l->data_id = p->data_id;
    l->length = p->length;
    l->fragments = p->nfrags;
    l->bytes = p->got;
    l->reason = reason;
    rx->lost_seq++;
    pthread_mutex_unlock(&rx->llock);
}

/* Eviction order (the timeout keeps the age list): events that received one fragment only, then
 * the others, each class least recently progressed (new bytes) first. Anyone who reaches a worker
 * can send first fragments claiming big new events; those never progress, so under such a flood
 * the fakes are evicted and an event that keeps receiving fragments is not, however old it is. */
static void lru_unlink(rxthr_t *t, int32_t i)
{
    pend_t *p = &t->ev[i];
    if (p->lprev >= 0)
        t->ev[p->lprev].lnext = p->lnext;
    else
        t->lhead[p->lcls] = p->lnext;
    if (p->lnext >= 0)
        t->ev[p->lnext].lprev = p->lprev;
    else
        t->ltail[p->lcls] = p->lprev;
}

static void lru_append(rxthr_t *t, int32_t i, uint8_t cls)
{
    pend_t *p = &t->ev[i];
    p->lcls = cls;
    p->lprev = t->ltail[cls];
    p->lnext = -1;
    if (t->ltail[cls] >= 0)
        t->ev[t->ltail[cls]].lnext = i;
    else
        t->lhead[cls] = i;
    t->ltail[cls] = i;
}

/* The next event to evict, never `keep` (-1 when there is none). */
static int32_t lru_victim(const rxthr_t *t, int32_t keep)
{
    for (int c = 0; c < 2; c++)
        for (int32_t i = t->lhead[c]; i >= 0; i = t->ev[i].lnext)
            if (i != keep)
                return i;
    return -1;
}

static void unreserve(rxthr_t *t, uint64_t n) { __atomic_sub_fetch(&t->rx->pend_bytes, n, __ATOMIC_RELAXED); }

/* Unlinks pending event i, returns its buffer (caller owns it) and recycles the slot. */
static uint8_t *pend_remove(rxthr_t *t, int32_t i, uint64_t now)
{
    pend_t *p = &t->ev[i];
    int32_t *link = &t->bucket[hkey(p->evn, p->data_id) & t->mask];
    while (*link != i)
        link = &t->ev[*link].hnext;
    *link = p->hnext;
    if (p->prev >= 0)
        t->ev[p->prev].next = p->next;
    else
        t->head = p->next;
    if (p->next >= 0)
        t->ev[p->next].prev = p->prev;
    else
        t->tail = p->prev;
    lru_unlink(t, i);
    if (p->iv != p->iv_inline)
        free(p->iv);
    done_put(t, p->evn, p->data_id, now);
    unreserve(t, p->charge);
    t->npend--;
    uint8_t *buf = p->buf;
    p->buf = NULL;
    p->hnext = t->free_head;
    t->free_head = i;
    if (t->last == i)
        t->last = -1;
    return buf;
}

/* why an event is dropped: the lost log says timeout or evicted; the stats also say which cap */
enum { DROP_TIMEOUT, DROP_BYTE_CAP, DROP_EVENT_CAP };

static void pend_drop(rxthr_t *t, int32_t i, int why, uint64_t now)
{
    log_lost(t->rx, &t->ev[i], why == DROP_TIMEOUT ? EJLB_RX_LOST_TIMEOUT : EJLB_RX_LOST_EVICTED);
    if (why == DROP_TIMEOUT) {
        EJLB_COUNT(t->st.lost, 1);
    } else {
        EJLB_COUNT(t->st.evicted, 1);
        if (why == DROP_BYTE_CAP)
            EJLB_COUNT(t->st.evicted_byte_cap, 1);
        else
            EJLB_COUNT(t->st.evicted_event_cap, 1);
    }
    ejlb_buf_release(pend_remove(t, i, now));
}

/* Books `extra` bytes against the cap, first evicting this thread's pending events in eviction
 * order (lru_victim, never `keep`) as long as they do not fit. */
static int reserve(rxthr_t *t, uint64_t extra, int32_t keep, uint64_t now)
{
    struct ejlb_rx *rx = t->rx;
    if (extra > rx->cap_bytes)
        return -1;
    uint64_t cur = __atomic_load_n(&rx->pend_bytes, __ATOMIC_RELAXED);
    for (;;) {
        if (cur + extra <= rx->cap_bytes) {
            if (__atomic_compare_exchange_n(&rx->pend_bytes, &cur, cur + extra, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
                return 0;
            }
            continue; /* cur was reloaded by the failed exchange */
        }
        int32_t victim = lru_victim(t, keep);
        if (victim < 0)
            return -1;
        pend_drop(t, victim, DROP_BYTE_CAP, now);
        cur = __atomic_load_n(&rx->pend_bytes, __ATOMIC_RELAXED);
    }
}

static int32_t pend_new(rxthr_t *t, uint64_t evn, uint16_t id, uint32_t length, uint64_t now)
{
    uint64_t charge = (uint64_t)length + EJLB_RX_EVENT_OVERHEAD;
    if (reserve(t, charge, -1, now))
        return -1;
    if (t->npend == t->cap_events)
        pend_drop(t, lru_victim(t, -1), DROP_EVENT_CAP, now);
    uint8_t *buf = buf_get(length);
    if (!buf) {
        unreserve(t, charge);
        return -1;
    }
    int32_t i = t->free_head;
    pend_t *p = &t->ev[i];
    t->free_head = p->hnext;
    memset(p, 0, sizeof *p);
    p->evn = evn;
    p->data_id = id;
    p->length = length;
    p->t0 = now;
    p->charge = charge;
    p->buf = buf;
    p->iv = p->iv_inline;
    p->civ = INLINE_IV;
    uint32_t h = hkey(evn, id) & t->mask;
    p->hnext = t->bucket[h];
    t->bucket[h] = i;
    p->prev = t->tail;
    p->next = -1;
    if (t->tail >= 0)
        t->ev[t->tail].next = i;
    else
        t->head = i;
    t->tail = i;
    lru_append(t, i, 0);
    t->npend++;
    return i;
}

static int iv_insert_at(rxthr_t *t, int32_t i, uint32_t at, iv_t v, uint64_t now)
{
    pend_t *p = &t->ev[i];
    if (p->niv == p->civ) {
        /* interval memory is charged to the byte cap like event bytes */
        uint64_t grow = (uint64_t)p->civ * sizeof(iv_t);
        if (reserve(t, grow, i, now))
            return -1;
        iv_t *n = malloc(2 * grow);
        if (!n) {
            unreserve(t, grow);
            return -1;
        }
        memcpy(n, p->iv, p->niv * sizeof(iv_t));
        if (p->iv != p->iv_inline)
            free(p->iv);
        p->iv = n;
        p->civ *= 2;
        p->charge += grow;
    }
    memmove(p->iv + at + 1, p->iv + at, (p->niv - at) * sizeof(iv_t));
    p->iv[at] = v;
    p->niv++;
    return 0;
}

/* Adds [s, e) (s < e) to the received set of event i. Returns the number of bytes that were not
 * received before, or -1 when the interval set cannot grow. */
static int64_t iv_add(rxthr_t *t, int32_t i, uint32_t s, uint32_t e, uint64_t now)
{
    pend_t *p = &t->ev[i];
    uint32_t n = p->niv;
    if (n == 0 || p->iv[n - 1].e <= s) { /* in-order arrival: the common case */
        if (n && p->iv[n - 1].e == s) {
            p->iv[n - 1].e = e;
            return e - s;
        }
        return iv_insert_at(t, i, n, (iv_t){s, e}, now) ? -1 : (int64_t)(e - s);
    }
    uint32_t lo = 0, hi = n; /* lo = first interval with end >= s */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (p->iv[mid].e < s)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint32_t end = lo; /* intervals [lo, end) touch or overlap [s, e) */
    uint64_t covered = 0;
    while (end < n && p->iv[end].s <= e) {
        uint32_t a = p->iv[end].s > s ? p->iv[end].s : s;
        uint32_t b = p->iv[end].e < e ? p->iv[end].e : e;
        if (b > a)
            covered += b - a;
        end++;
    }
    if (end == lo)
        return iv_insert_at(t, i, lo, (iv_t){s, e}, now) ? -1 : (int64_t)(e - s);
    iv_t m = {p->iv[lo].s < s ? p->iv[lo].s : s, p->iv[end - 1].e > e ? p->iv[end - 1].e : e};
    p->iv[lo] = m;
    memmove(p->iv + lo + 1, p->iv + end, (n - end) * sizeof(iv_t));
    p->niv -= end - lo - 1;
    return (int64_t)(e - s) - (int64_t)covered;
}

static void enqueue(struct ejlb_rx *rx, uint64_t evn, uint16_t id, uint32_t length, uint8_t *buf)
{
    pthread_mutex_lock(&rx->qlock);
    if (rx->qcount == rx->qcap) {
        rx->enqueue_err++;
        pthread_mutex_unlock(&rx->qlock);
        ejlb_buf_release(buf);
        return;
    }
    ejlb_rx_event *e = &rx->q[(rx->qhead + rx->qcount) % rx->qcap];
    e->event_number = evn;
    e->data_id = id;
    e->length = length;
    e->data = buf;
    rx->qcount++;
    pthread_cond_signal(&rx->qcond);
    pthread_mutex_unlock(&rx->qlock);
}

static void commit(rxthr_t *t, int32_t i, uint32_t off, uint32_t flen, const uint8_t *src, uint64_t now);

/* One datagram (UDP payload) through the reassembly rules; never fails, only counts. */
static void on_datagram(rxthr_t *t, const uint8_t *d, size_t n, uint64_t now)
{
    struct ejlb_rx *rx = t->rx;
    EJLB_COUNT(t->st.totals.packets_recv, 1);
    EJLB_COUNT(t->st.totals.bytes_recv, n);
    if (rx->with_lb) {
        if (n < EJLB_HEADERS_LEN || !ejlb_lb_ok(d)) {
            EJLB_COUNT(t->st.bad_headers, 1);
            return;
        }
        d += EJLB_LB_HEADER_LEN;
        n -= EJLB_LB_HEADER_LEN;
    }
    if (n < EJLB_RE_HEADER_LEN || !ejlb_re_ok(d)) {
        EJLB_COUNT(t->st.bad_headers, 1);
        return;
    }
    uint16_t id = ejlb_rd16(d + EJLB_RE_OFF_DATA_ID);
    uint32_t off = ejlb_rd32(d + EJLB_RE_OFF_OFFSET);
    uint32_t length = ejlb_rd32(d + EJLB_RE_OFF_LENGTH);
    uint64_t evn = ejlb_rd64(d + EJLB_RE_OFF_EVENT_NUMBER);
    uint64_t flen = n - EJLB_RE_HEADER_LEN;
    if ((uint64_t)off + flen > length || (flen == 0 && length != 0)) {
        EJLB_COUNT(t->st.bad_fragments, 1);
        return;
    }
    int32_t i = pend_find(t, evn, id);
    if (i < 0) {
        if (done_hit(t, evn, id, now)) {
            EJLB_COUNT(t->st.duplicates, 1);
            return;
        }
        if (length == 0) { /* a whole empty event in one datagram */
            EJLB_COUNT(t->st.totals.events_recv, 1);
            EJLB_COUNT(t->st.totals.events_reassembled, 1);
            done_put(t, evn, id, now);
            enqueue(rx, evn, id, 0, NULL);
            return;
        }
        i = pend_new(t, evn, id, length, now);
        if (i < 0) {
            EJLB_COUNT(t->st.bad_fragments, 1);
            return;
        }
        EJLB_COUNT(t->st.totals.events_recv, 1);
    } else if (t->ev[i].length != length) {
        EJLB_COUNT(t->st.bad_fragments, 1);
        return;
    }
    commit(t, i, off, (uint32_t)flen, d + EJLB_RE_HEADER_LEN, now);
}

/* Marks [off, off + flen) of pending event i received, copying the bytes from src (NULL: already in
 * place), and completes the event when it is whole. */
static void commit(rxthr_t *t, int32_t i, uint32_t off, uint32_t flen, const uint8_t *src, uint64_t now)
{
    pend_t *p = &t->ev[i];
    int64_t fresh = iv_add(t, i, off, off + flen, now);
    p = &t->ev[i];
    if (fresh < 0) {
        EJLB_COUNT(t->st.bad_fragments, 1);
        return;
    }
    if (fresh == 0) {
        EJLB_COUNT(t->st.duplicates, 1);
        return;
    }
    if ((uint64_t)fresh < flen)
        EJLB_COUNT(t->st.overlaps, 1);
    if (src)
        memcpy(p->buf + off, src, flen);
    p->got += (uint32_t)fresh;
    p->nfrags++;
    uint8_t cls = p->nfrags > 1;
    if (t->ltail[cls] != i) { /* progress: last in line for eviction */
        lru_unlink(t, i);
        lru_append(t, i, cls);
    }
    if (p->got == p->length) {
        EJLB_COUNT(t->st.totals.events_reassembled, 1);
        uint64_t evn = p->evn;
        uint16_t id = p->data_id;
        uint32_t length = p->length;
        uint8_t *buf = pend_remove(t, i, now);
        enqueue(t->rx, evn, id, length, buf);
    }
}

/* One receive buffer: a single datagram, or a GRO buffer of `seg`-byte segments (last shorter). */
static void on_buffer(rxthr_t *t, const uint8_t *d, size_t len, size_t seg, uint64_t now)
{
    if (!seg || seg >= len) {
        on_datagram(t, d, len, now);
        return;
    }
    EJLB_COUNT(t->st.gro_buffers, 1);
    for (size_t o = 0; o < len; o += seg)
        on_datagram(t, d + o, len - o < seg ? len - o : seg, now);
}

static void expire(rxthr_t *t, uint64_t now)
{
    while (t->head >= 0 && now - t->ev[t->head].t0 >= t->rx->timeout_us)
        pend_drop(t, t->head, DROP_TIMEOUT, now);
}

static size_t hdr_len(const rxthr_t *t) { return t->rx->with_lb ? EJLB_HEADERS_LEN : EJLB_RE_HEADER_LEN; }

/* End of the not yet received run of event p's bytes that starts at `at` (0 when `at` is received). */
static uint32_t spec_limit(const pend_t *p, uint32_t at)
{
    uint32_t lo = 0, hi = p->niv; /* first interval that ends after `at` */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (p->iv[mid].e <= at)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->niv)
        return p->length;
    return p->iv[lo].s <= at ? 0 : p->iv[lo].s;
}

/* Does the header at h carry the fragment (p's event, offset off)? Checks exactly what on_datagram
 * checks, so that a message placed in place is accounted as on_datagram would. */
static int spec_header_ok(const rxthr_t *t, const uint8_t *h, const pend_t *p, uint32_t off)
{
    if (t->rx->with_lb) {
        if (!ejlb_lb_ok(h))
            return 0;
        h += EJLB_LB_HEADER_LEN;
    }
    return ejlb_re_ok(h) &&
           ejlb_rd16(h + EJLB_RE_OFF_DATA_ID) == p->data_id && ejlb_rd32(h + EJLB_RE_OFF_OFFSET) == off &&
           ejlb_rd32(h + EJLB_RE_OFF_LENGTH) == p->length && ejlb_rd64(h + EJLB_RE_OFF_EVENT_NUMBER) == p->evn;
}

/* Was speculative message k received exactly as planned: every segment a fragment of the planned
 * event at its planned offset, its payload inside its slot? (Pure check, changes nothing.) */
static int spec_clean(const rxthr_t *t, int k, size_t len, size_t seg, uint32_t L)
{
    const plan_t *pl = &t->plan[k];
    const pend_t *p = &t->ev[pl->i];
    const uint8_t *stg = t->data + (size_t)k * RXBUF;
    size_t H = hdr_len(t);
    size_t s = seg && seg < len ? seg : len;
    if (len == 0 || (s < len && s != H + L))
        return 0;
    size_t nsegs = (len + s - 1) / s;
    if (nsegs > pl->N)
        return 0;
    for (size_t j = 0; j < nsegs; j++) {
        size_t sl = len - j * s < s ? len - j * s : s;
        if (sl <= H || sl - H > (j + 1 == pl->N ? pl->last : L) ||
            !spec_header_ok(t, stg + j * (H + L), p, pl->P + (uint32_t)j * L))
            return 0;
    }
    return 1;
}

/* Copies the payloads of speculative message k from the event buffer to where they belong in the
 * message's staging buffer, which then holds the message as a plain receive would have. */
static void spec_gather(rxthr_t *t, int k, size_t len, uint32_t L)
{
    const plan_t *pl = &t->plan[k];
    const pend_t *p = &t->ev[pl->i];
    uint8_t *stg = t->data + (size_t)k * RXBUF;
    size_t H = hdr_len(t);
    for (uint32_t j = 0; j < pl->N; j++) {
        size_t at = (size_t)j * (H + L) + H;
        if (at >= len)
            break;
        size_t n = j + 1 == pl->N ? pl->last : L;
        memcpy(stg + at, p->buf + pl->P + (size_t)j * L, len - at < n ? len - at : n);
    }
}

/* Accounts speculative message k, whose payloads are already in place (spec_clean said so). */
static void spec_commit(rxthr_t *t, int k, size_t len, size_t seg, uint32_t L, uint64_t now)
{
    const plan_t *pl = &t->plan[k];
    size_t H = hdr_len(t);
    size_t s = seg && seg < len ? seg : len;
    if (s < len)
        EJLB_COUNT(t->st.gro_buffers, 1);
    for (size_t j = 0; j * s < len; j++) {
        size_t sl = len - j * s < s ? len - j * s : s;
        EJLB_COUNT(t->st.totals.packets_recv, 1);
        EJLB_COUNT(t->st.totals.bytes_recv, sl);
        EJLB_COUNT(t->st.placed, 1);
        commit(t, pl->i, pl->P + (uint32_t)j * L, (uint32_t)(sl - H), NULL, now);
    }
}

/* Learns the prediction of socket `sock` from the last datagram of the batch just processed. */
static void spec_learn(rxthr_t *t, int sock, int n, size_t maxsegs)
{
    pred_t *pr = &t->pred[sock];
    pr->on = 0;
    size_t len = t->msgs[n - 1].msg_len, seg = t->seg[n - 1];
    size_t s = seg && seg < len ? seg : len;
    if (len == 0)
        return;
    size_t H = hdr_len(t);
    size_t lastlen = len - (len - 1) / s * s;
    const uint8_t *h = t->data + (size_t)(n - 1) * RXBUF + (len - lastlen);
    if (lastlen != s || s < H + SPEC_MIN_PAYLOAD)
        return; /* a short last segment ends its event */
    if (t->rx->with_lb)
        h += EJLB_LB_HEADER_LEN;
    if (!ejlb_re_ok(h))
        return;
    uint16_t id = ejlb_rd16(h + EJLB_RE_OFF_DATA_ID);
    uint64_t evn = ejlb_rd64(h + EJLB_RE_OFF_EVENT_NUMBER);
    uint32_t off = ejlb_rd32(h + EJLB_RE_OFF_OFFSET);
    int32_t i = pend_find(t, evn, id);
    if (i < 0 || (uint64_t)off + (s - H) >= t->ev[i].length)
        return;
    size_t cap = RXBUF / s;
    if (maxsegs > cap)
        maxsegs = cap;
    if (maxsegs > SPEC_MAX_SEGS)
        maxsegs = SPEC_MAX_SEGS;
    *pr = (pred_t){.evn = evn, .data_id = id, .next = off + (uint32_t)(s - H), .L = (uint32_t)(s - H),
                   .nseg = (uint32_t)(maxsegs ? maxsegs : 1), .on = 1, .streak = pr->streak};
}

/* Plans the speculative layout of the next batch on socket `sock`; returns the number of planned
 * messages (0: no prediction). Message k receives into [header slot, payload slot] pairs, the
 * header slots at their place in the message's staging buffer, the payload slots at their predicted
 * place in the event buffer, then the rest of the staging buffer (so nothing is ever truncated).
 * Only bytes of the event not yet received are targeted, never past its end. */
static int spec_plan(rxthr_t *t, int sock)
{
    pred_t *pr = &t->pred[sock];
    if (!pr->on)
        return 0;
    int32_t i = pend_find(t, pr->evn, pr->data_id);
    if (i < 0)
        return 0;
    pend_t *p = &t->ev[i];
    uint32_t lim = spec_limit(p, pr->next), cur = pr->next, L = pr->L;
    size_t H = hdr_len(t);
    if (lim <= cur)
        return 0;
    struct iovec *v = t->siov;
    int k = 0;
    for (; k < BATCH && cur < lim; k++) {
        uint8_t *stg = t->data + (size_t)k * RXBUF;
        plan_t *pl = &t->plan[k];
        struct iovec *first = v;
        size_t pos = 0;
        *pl = (plan_t){.i = i, .P = cur};
        for (uint32_t j = 0; j < pr->nseg && cur < lim; j++) {
            uint32_t l = lim - cur < L ? lim - cur : L;
            *v++ = (struct iovec){stg + pos, H};
            *v++ = (struct iovec){p->buf + cur, l};
            pos += H + l;
            cur += l;
            pl->N++;
            pl->last = l;
        }
        *v++ = (struct iovec){stg + pos, RXBUF - pos};
        t->msgs[k].msg_hdr.msg_iov = first;
        t->msgs[k].msg_hdr.msg_iovlen = v - first;
    }
    return k;
}

/* One recvmmsg batch on socket `sock`; returns the number of messages, *full when the batch was
 * filled (more may be waiting).
 *
 * Speculative direct placement: when the last datagram on this socket was a fragment of an event
 * that is still missing bytes right after it, the batch is received with the payloads scattered
 * straight into the event buffer at the offsets that consecutive equal fragments would have, so a
 * correct guess costs no copy. Every header is checked afterwards; from the first message that was
 * not exactly as predicted on, the messages are copied back into their staging buffers and go the
 * plain way (only validated fragments are ever marked received, and speculative slots only cover
 * bytes not received yet, so a wrong guess leaves garbage only where a later fragment will write). */
static int rx_batch(rxthr_t *t, int sock, int *full)
{
    pred_t *pr = &t->pred[sock];
    int nplan = spec_plan(t, sock);
    uint32_t L = pr->L;
    /* a new event follows the end of a placed one: take its first buffer alone, to place the rest */
    int vlen = nplan ? nplan : pr->streak ? 1 : BATCH;
    for (int k = 0; k < vlen; k++) {
        if (k >= nplan) {
            t->msgs[k].msg_hdr.msg_iov = &t->iov[k];
            t->msgs[k].msg_hdr.msg_iovlen = 1;
        }
        t->msgs[k].msg_hdr.msg_control = t->ctrl[k];
        t->msgs[k].msg_hdr.msg_controllen = CTRL_LEN;
        t->msgs[k].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(t->fds[sock], t->msgs, vlen, MSG_DONTWAIT, NULL);
    *full = n == vlen;
    if (n <= 0) {
        *full = 0;
        return 0;
    }
    uint64_t now = now_us();
    size_t maxsegs = 0;
    for (int k = 0; k < n; k++) {
        struct msghdr *h = &t->msgs[k].msg_hdr;
        size_t seg = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof v);
                seg = v > 0 ? (size_t)v : 0;
            }
        t->seg[k] = seg;
        size_t len = t->msgs[k].msg_len, segs = seg && seg < len ? (len + seg - 1) / seg : 1;
        if (segs > maxsegs)
            maxsegs = segs;
    }
    int m = 0; /* messages [0, m) were placed as predicted */
    while (m < n && m < nplan && spec_clean(t, m, t->msgs[m].msg_len, t->seg[m], L))
        m++;
    for (int k = m; k < n && k < nplan; k++) /* before any bytes move */
        spec_gather(t, k, t->msgs[k].msg_len, L);
    for (int k = 0; k < n; k++) {
        if (k < m)
            spec_commit(t, k, t->msgs[k].msg_len, t->seg[k], L, now);
        else
            on_buffer(t, t->data + (size_t)k * RXBUF, t->msgs[k].msg_len, t->seg[k], now);
    }
    pr->streak = nplan && m == n;
    spec_learn(t, sock, n, maxsegs);
    return n;
}

/* this thread's CPU time so far, stored before every poll (i.e. after each round of receiving), so
 * that a stats reader sees it while the thread runs; one clock_gettime per round of syscalls */
static void note_cpu(rxthr_t *t)
{
    struct timespec c;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c) == 0)
        EJLB_STORE(t->st.cpu_ns, (uint64_t)c.tv_sec * 1000000000u + (uint64_t)c.tv_nsec);
}

static void *thr_main(void *arg)
{
    rxthr_t *t = arg;
    struct ejlb_rx *rx = t->rx;
    struct pollfd pfd[t->nfds + 1];
    for (int k = 0; k < t->nfds; k++)
        pfd[k] = (struct pollfd){.fd = t->fds[k], .events = POLLIN};
    pfd[t->nfds] = (struct pollfd){.fd = rx->wakefd, .events = POLLIN};
    int busy = 0;
    while (!__atomic_load_n(&rx->stop, __ATOMIC_ACQUIRE)) {
        uint64_t now = now_us();
        expire(t, now);
        int wait_ms = -1; /* idle and nothing pending: sleep until data or stop */
        if (busy)
            wait_ms = 0;
        else if (t->head >= 0) {
            uint64_t due = t->ev[t->head].t0 + rx->timeout_us;
            wait_ms = due > now ? (int)((due - now + 999) / 1000) : 0;
        }
        busy = 0;
        note_cpu(t);
        if (poll(pfd, t->nfds + 1, wait_ms) <= 0)
            continue;
        /* only ready sockets: a thread may serve thousands of ports */
        for (int k = 0; k < t->nfds; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLERR)))
                continue;
            int full, taken = 0;
            while ((taken += rx_batch(t, k, &full)), full)
                if (taken >= DRAIN_BATCHES * BATCH) { /* let the other sockets and the timeouts have a turn */
                    busy = 1;
                    break;
                }
        }
    }
    note_cpu(t);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */
static void thr_release(rxthr_t *t)
{
    if (t->ev)
        for (int32_t i = t->head; i >= 0;) {
            int32_t next = t->ev[i].next;
            ejlb_buf_release(pend_remove(t, i, 0));
            i = next;
        }
    free(t->ev);
    free(t->bucket);
    free(t->done);
    free(t->msgs);
    free(t->iov);
    free(t->data);
    free(t->ctrl);
    free(t->pred);
    free(t->siov);
    free(t->fds);
}

static int thr_init(rxthr_t *t, struct ejlb_rx *rx, uint32_t cap_events)
{
    t->rx = rx;
    t->head = t->tail = t->last = -1;
    t->lhead[0] = t->lhead[1] = t->ltail[0] = t->ltail[1] = -1;
    t->cap_events = cap_events;
    uint32_t nb = 1;
    while (nb < 2 * cap_events)
        nb <<= 1;
    t->mask = nb - 1;
    t->ev = calloc(cap_events, sizeof *t->ev);
    t->bucket = malloc(nb * sizeof *t->bucket);
    t->done = calloc(DONE_SLOTS, sizeof *t->done);
    t->msgs = calloc(BATCH, sizeof *t->msgs);
    t->iov = calloc(BATCH, sizeof *t->iov);
    t->data = malloc((size_t)BATCH * RXBUF);
    t->ctrl = calloc(BATCH, CTRL_LEN);
    t->siov = calloc((size_t)BATCH * SPEC_IOV, sizeof *t->siov);
    if (!t->ev || !t->bucket || !t->done || !t->msgs || !t->iov || !t->data || !t->ctrl || !t->siov)
        return -1;
    memset(t->bucket, 0xff, nb * sizeof *t->bucket);
    for (uint32_t i = 0; i < cap_events; i++)
        t->ev[i].hnext = i + 1 < cap_events ? (int32_t)i + 1 : -1;
    t->free_head = 0;
    t->head = t->tail = -1;
    t->lhead[0] = t->lhead[1] = t->ltail[0] = t->ltail[1] = -1;
    for (int k = 0; k < BATCH; k++) {
        t->iov[k].iov_base = t->data + (size_t)k * RXBUF;
        t->iov[k].iov_len = RXBUF;
        t->msgs[k].msg_hdr.msg_iov = &t->iov[k];
        t->msgs[k].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

ejlb_rx *ejlb_rx_new(const int *fds, int nfds, int threads, int with_lb_header, uint64_t timeout_us,
                     uint64_t max_pending_bytes, uint32_t max_pending_events, uint32_t queue_size,
                     uint32_t lost_log_size, char *err, size_t errlen)
{
    if (nfds < 1 || threads < 1 || threads > nfds) {
        snprintf(err, errlen, "threads=%d: need 1 <= threads <= sockets (%d)", threads, nfds);
        return NULL;
    }
    if (queue_size < 1 || max_pending_events < (uint32_t)threads) {
        snprintf(err, errlen, "queue_size=%u, max_pending_events=%u: need queue_size >= 1 and "
                 "max_pending_events >= threads", queue_size, max_pending_events);
        return NULL;
    }
    struct ejlb_rx *rx = calloc(1, sizeof *rx);
    if (!rx)
        goto oom;
    rx->nthreads = threads;
    rx->with_lb = with_lb_header;
    rx->timeout_us = timeout_us;
    rx->cap_bytes = max_pending_bytes;
    rx->wakefd = -1;
    pthread_mutex_init(&rx->qlock, NULL);
    pthread_mutex_init(&rx->llock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rx->qcond, &ca);
    pthread_condattr_destroy(&ca);
    rx->qcap = queue_size;
    rx->q = calloc(queue_size, sizeof *rx->q);
    rx->lost_cap = lost_log_size;
    rx->lost = calloc(lost_log_size ? lost_log_size : 1, sizeof *rx->lost);
    rx->thr = calloc(threads, sizeof *rx->thr);
    if (!rx->q || !rx->lost || !rx->thr)
        goto oom;
    for (int k = 0; k < threads; k++) {
        rxthr_t *t = &rx->thr[k];
        if (thr_init(t, rx, max_pending_events / threads))
            goto oom;
        t->fds = malloc(nfds * sizeof(int));
        t->pred = calloc(nfds, sizeof *t->pred);
        if (!t->fds || !t->pred)
            goto oom;
        for (int f = k; f < nfds; f += threads)
            t->fds[t->nfds++] = fds[f];
    }
    rx->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rx->wakefd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        ejlb_rx_free(rx);
        return NULL;
    }
    return rx;
oom:
    snprintf(err, errlen, "out of memory allocating the receiver");
    ejlb_rx_free(rx);
    return NULL;
}

int ejlb_rx_start(ejlb_rx *rx, char *err, size_t errlen)
{
    if (rx->running || rx->stop) {
        snprintf(err, errlen, "receiver already started");
        return -1;
    }
    for (int k = 0; k < rx->nthreads; k++) {
        int e = pthread_create(&rx->thr[k].tid, NULL, thr_main, &rx->thr[k]);
        if (e) {
            snprintf(err, errlen, "pthread_create: %s", strerror(e));
            rx->running = k;
            ejlb_rx_stop(rx);
            return -1;
        }
    }
    rx->running = rx->nthreads;
    return 0;
}

void ejlb_rx_stop(ejlb_rx *rx)
{
    if (!rx)
        return;
    __atomic_store_n(&rx->stop, 1, __ATOMIC_RELEASE);
    if (rx->running) {
        uint64_t one = 1;
        if (write(rx->wakefd, &one, sizeof one) < 0) {
            /* the counter cannot overflow with one write; threads also see `stop` at poll return */
        }
        for (int k = 0; k < rx->running; k++)
            pthread_join(rx->thr[k].tid, NULL);
        rx->running = 0;
    }
    pthread_mutex_lock(&rx->qlock);
    rx->closed = 1;
    pthread_cond_broadcast(&rx->qcond);
    pthread_mutex_unlock(&rx->qlock);
}

void ejlb_rx_free(ejlb_rx *rx)
{
    if (!rx)
        return;
    ejlb_rx_stop(rx);
    if (rx->thr)
        for (int k = 0; k < rx->nthreads; k++)
            thr_release(&rx->thr[k]);
    for (uint32_t k = 0; rx->q && k < rx->qcount; k++)
        ejlb_buf_release(rx->q[(rx->qhead + k) % rx->qcap].data);
    if (rx->wakefd >= 0)
        close(rx->wakefd);
    pthread_mutex_destroy(&rx->qlock);
    pthread_mutex_destroy(&rx->llock);
    pthread_cond_destroy(&rx->qcond);
    free(rx->thr);
    free(rx->q);
    free(rx->lost);
    free(rx);
}

int ejlb_rx_next_many(ejlb_rx *rx, int timeout_ms, ejlb_rx_event *out, int max, int *count)
{
    struct timespec deadline;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    int rc = EJLB_RX_OK;
    *count = 0;
    pthread_mutex_lock(&rx->qlock);
    while (!rx->qcount) {
        if (rx->closed) {
            rc = EJLB_RX_CLOSED;
            break;
        }
        if (timeout_ms == 0 ||
            (timeout_ms > 0 && pthread_cond_timedwait(&rx->qcond, &rx->qlock, &deadline) == ETIMEDOUT &&
             !rx->qcount && !rx->closed)) {
            rc = EJLB_RX_TIMEOUT;
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&rx->qcond, &rx->qlock);
    }
    if (rc == EJLB_RX_OK) {
        int n = rx->qcount < (uint32_t)max ? (int)rx->qcount : max;
        for (int k = 0; k < n; k++) {
            out[k] = rx->q[rx->qhead];
            rx->qhead = (rx->qhead + 1) % rx->qcap;
        }
        rx->qcount -= n;
        rx->dequeued += n;
        *count = n;
    }
    pthread_mutex_unlock(&rx->qlock);
    return rc;
}

int ejlb_rx_next(ejlb_rx *rx, int timeout_ms, ejlb_rx_event *out)
{
    int n;
    return ejlb_rx_next_many(rx, timeout_ms, out, 1, &n);
}

uint32_t ejlb_rx_queue_depth(ejlb_rx *rx)
{
    pthread_mutex_lock(&rx->qlock);
    uint32_t n = rx->qcount;
    pthread_mutex_unlock(&rx->qlock);
    return n;
}

uint32_t ejlb_rx_queue_capacity(ejlb_rx *rx) { return rx->qcap; }

void ejlb_rx_get_stats(ejlb_rx *rx, ejlb_rx_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int k = 0; k < rx->nthreads; k++) {
        ejlb_rx_stats *s = &rx->thr[k].st;
        out->totals.events_recv += EJLB_LOAD(s->totals.events_recv);
        out->totals.events_reassembled += EJLB_LOAD(s->totals.events_reassembled);
        out->totals.bytes_recv += EJLB_LOAD(s->totals.bytes_recv);
        out->totals.packets_recv += EJLB_LOAD(s->totals.packets_recv);
        out->bad_headers += EJLB_LOAD(s->bad_headers);
        out->bad_fragments += EJLB_LOAD(s->bad_fragments);
        out->duplicates += EJLB_LOAD(s->duplicates);
        out->overlaps += EJLB_LOAD(s->overlaps);
        out->lost += EJLB_LOAD(s->lost);
        out->evicted += EJLB_LOAD(s->evicted);
        out->evicted_byte_cap += EJLB_LOAD(s->evicted_byte_cap);
        out->evicted_event_cap += EJLB_LOAD(s->evicted_event_cap);
        out->gro_buffers += EJLB_LOAD(s->gro_buffers);
        out->cpu_ns += EJLB_LOAD(s->cpu_ns);
        out->placed += EJLB_LOAD(s->placed);
    }
    out->totals.events_reassembly_err = out->lost + out->evicted;
    pthread_mutex_lock(&rx->qlock);
    out->totals.events_dequeued = rx->dequeued;
    out->totals.event_enqueue_err = rx->enqueue_err;
    pthread_mutex_unlock(&rx->qlock);
}

int ejlb_rx_lost(ejlb_rx *rx, uint64_t since, ejlb_rx_lost_event *out, int max, uint64_t *next)
{
    pthread_mutex_lock(&rx->llock);
    uint64_t oldest = rx->lost_seq > rx->lost_cap ? rx->lost_seq - rx->lost_cap : 0;
    uint64_t s = since > oldest ? since : oldest;
    int n = 0;
    for (; s < rx->lost_seq && n < max; s++, n++)
        out[n] = rx->lost[s % rx->lost_cap];
    *next = s;
    pthread_mutex_unlock(&rx->llock);
    return n;
}

int ejlb_rx_gro_enabled(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, SOL_UDP, UDP_GRO, &on, &len) == 0 && on;
}

void ejlb_rx_feed(ejlb_rx *rx, const uint8_t *buf, size_t len, size_t seg, uint64_t now_us)
{
    on_buffer(&rx->thr[0], buf, len, seg, now_us);
}

void ejlb_rx_expire(ejlb_rx *rx, uint64_t now_us) { expire(&rx->thr[0], now_us); }
