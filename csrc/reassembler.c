/* The reassembler of one receive thread: pending events (hash lookup, age list for the timeout,
 * progress lists for eviction), the shared byte cap, the reassembly rules applied to each datagram,
 * the queue of completed events and the lost log. Its Python oracle is src/ejlb/shim/reassembly.py;
 * tests/test_receiver_native.py feeds both the same datagrams and compares. */
#define _GNU_SOURCE
#include "recv_core.h"

#include <stdlib.h>
#include <string.h>

static uint32_t hkey(uint64_t evn, uint16_t id)
{
    uint64_t h = (evn ^ ((uint64_t)id << 47)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

int32_t rx_pend_find(rxthr_t *t, uint64_t evn, uint16_t id)
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
uint8_t *rx_pend_remove(rxthr_t *t, int32_t i, uint64_t now)
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
    ejlb_ivset_free(&p->rcvd);
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
    ejlb_buf_release(rx_pend_remove(t, i, now));
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
    uint8_t *buf = ejlb_buf_get(length);
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
    ejlb_ivset_init(&p->rcvd);
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

/* Interval memory of a pending event is charged to the byte cap like its bytes (ejlb_ivset's grow). */
struct charge { rxthr_t *t; int32_t i; uint64_t now; };

static int charge_intervals(void *arg, int64_t bytes)
{
    struct charge *c = arg;
    if (bytes < 0) {
        unreserve(c->t, (uint64_t)-bytes);
        c->t->ev[c->i].charge -= (uint64_t)-bytes;
        return 0;
    }
    if (reserve(c->t, (uint64_t)bytes, c->i, c->now))
        return -1;
    c->t->ev[c->i].charge += (uint64_t)bytes;
    return 0;
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
    int32_t i = rx_pend_find(t, evn, id);
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
    rx_commit(t, i, off, (uint32_t)flen, d + EJLB_RE_HEADER_LEN, now);
}

/* Marks [off, off + flen) of pending event i received, copying the bytes from src (NULL: already in
 * place), and completes the event when it is whole. */
void rx_commit(rxthr_t *t, int32_t i, uint32_t off, uint32_t flen, const uint8_t *src, uint64_t now)
{
    pend_t *p = &t->ev[i];
    int64_t fresh = ejlb_ivset_add(&p->rcvd, off, off + flen, charge_intervals, &(struct charge){t, i, now});
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
        uint8_t *buf = rx_pend_remove(t, i, now);
        enqueue(t->rx, evn, id, length, buf);
    }
}

/* One receive buffer: a single datagram, or a GRO buffer of `seg`-byte segments (last shorter). */
void rx_on_buffer(rxthr_t *t, const uint8_t *d, size_t len, size_t seg, uint64_t now)
{
    if (!seg || seg >= len) {
        on_datagram(t, d, len, now);
        return;
    }
    EJLB_COUNT(t->st.gro_buffers, 1);
    for (size_t o = 0; o < len; o += seg)
        on_datagram(t, d + o, len - o < seg ? len - o : seg, now);
}

void rx_expire(rxthr_t *t, uint64_t now)
{
    while (t->head >= 0 && now - t->ev[t->head].t0 >= t->rx->timeout_us)
        pend_drop(t, t->head, DROP_TIMEOUT, now);
}
