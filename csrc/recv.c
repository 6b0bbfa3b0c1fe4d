/* Native receive core: see recv.h for the model and recv_core.h for its parts. This file holds the
 * receive threads, their lifecycle and the API. */
#define _GNU_SOURCE
#include "recv_core.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
        rx_expire(t, now);
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
            ejlb_buf_release(rx_pend_remove(t, i, 0));
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

ejlb_rx *ejlb_rx_new(const int *fds, int nfds, const ejlb_rx_options *opt, char *err, size_t errlen)
{
    int threads = opt->threads;
    uint32_t queue_size = opt->queue_size, max_pending_events = opt->max_pending_events;
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
    rx->with_lb = opt->with_lb_header;
    rx->timeout_us = opt->timeout_us;
    rx->cap_bytes = opt->max_pending_bytes;
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
    rx->lost_cap = opt->lost_log_size;
    rx->lost = calloc(rx->lost_cap ? rx->lost_cap : 1, sizeof *rx->lost);
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
    rx_on_buffer(&rx->thr[0], buf, len, seg, now_us);
}

void ejlb_rx_expire(ejlb_rx *rx, uint64_t now_us) { rx_expire(&rx->thr[0], now_us); }
