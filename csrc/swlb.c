/* Software LB fast path; see swlb.h for the design. */
#define _GNU_SOURCE
#include "swlb.h"
#include "wire.h"
#include "counters.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define RX_BATCH 32            /* datagrams (or GRO super-datagrams) per recvmmsg */
#define RX_BUF 65536           /* one GRO super-datagram at most */
#define TX_MAX 1024            /* datagrams per flush (>= GRO's 64 segments per buffer) */
#define GSO_MAX_BYTES 65000    /* below the 65507-byte UDP payload limit of one super-datagram */
#define RX_ROUNDS 8            /* recvmmsg batches per ready socket before polling again (fairness) */
#define POLL_MS 50             /* bounds how long stop and socket removal wait */


struct worker {
    struct ejlb_swlb *h;
    int idx, epfd;
    pthread_t thread;
    uint64_t seq;                 /* odd while holding a tables snapshot */
    uint64_t loops;               /* advances once per poll round */
    uint64_t lbc[EJLB_NUM_LBS][EJLB_LB_COUNTERS];
    uint64_t mc[EJLB_NUM_LBS][EJLB_MAX_MEMBERS][EJLB_MEMBER_COUNTERS];
    uint64_t glob[EJLB_DROP_CODES];
    uint64_t stats[EJLB_SWLB_STATS];
    /* receive */
    uint8_t *rxbuf;
    struct mmsghdr rx[RX_BATCH];
    struct iovec rxiov[RX_BATCH];
    struct sockaddr_in6 rxname[RX_BATCH];
    char rxctl[RX_BATCH][CMSG_SPACE(sizeof(int)) * 2];   /* GRO segment size + TTL / hop limit */
    /* send: one msg per GSO group, one iovec per datagram, pointing into rxbuf */
    struct mmsghdr tx[TX_MAX];
    struct iovec txiov[TX_MAX];
    struct sockaddr_in6 txname[TX_MAX];
    char txctl[TX_MAX][CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))];  /* GSO size + TTL */
    uint16_t txseg[TX_MAX];       /* segment size of each group */
    uint32_t txmember[TX_MAX];    /* lb << 16 | member id of each group */
    int16_t txttl[TX_MAX];        /* outgoing TTL / hop limit of each group, -1 = the kernel's default */
    uint8_t nogso[EJLB_NUM_LBS][EJLB_MAX_MEMBERS];  /* the route refused GSO: send plainly */
    const struct ejlb_swlb_tables *nogso_tables;               /* ...as long as these tables are current */
    int ntx, niov;
};

struct ejlb_swlb {
    int nthreads, started, stop;
    struct ejlb_swlb_tables *tables;  /* current snapshot, swapped atomically */
    pthread_mutex_t install_lock;
    struct worker *w[EJLB_SWLB_MAX_THREADS];
};

/* --- the decision (pure) ----------------------------------------------------------------------- */
static int epoch_for(const struct ejlb_swlb_lb *lb, uint64_t tick)
{
    int fallback = -1;  /* same order as Tables.epoch_for: first range holding tick, else catch-all */
    for (int e = 0; e < EJLB_NUM_EPOCHS; e++) {
        const struct ejlb_swlb_epoch *r = &lb->epochs[e];
        if (!r->valid)
            continue;
        if (r->start <= tick && (r->open_end || tick < r->end))
            return e;
        if (r->catch_all)
            fallback = e;
    }
    return fallback;
}

static int sender_allowed(const struct ejlb_swlb_tables *t, int lb_id, const uint8_t *src16)
{
    int lo = 0, hi = (int)t->lb[lb_id].n_senders - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = memcmp(t->senders[lb_id][mid], src16, 16);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

int ejlb_swlb_decide(const struct ejlb_swlb_tables *t, int lb_id, int family, const uint8_t *src16, int ttl,
                     const uint8_t *p, uint32_t len, struct ejlb_swlb_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->epoch = v->slot = v->member_id = -1;
    if (lb_id < 0 || lb_id >= EJLB_NUM_LBS || !t->lb[lb_id].present)
        return v->verdict = EJLB_DROP_NOT_LB;
    const struct ejlb_swlb_lb *lb = &t->lb[lb_id];
    if (len < EJLB_LB_HEADER_LEN || p[EJLB_LB_OFF_MAGIC] != EJLB_LB_MAGIC0 || p[EJLB_LB_OFF_MAGIC + 1] != EJLB_LB_MAGIC1)
        return v->verdict = EJLB_DROP_NO_LB_HDR;
    int version = p[EJLB_LB_OFF_VERSION];
    if (!ejlb_lb_version_ok(version))
        return v->verdict = EJLB_DROP_BAD_VERSION;
    v->version = version;
    if (!sender_allowed(t, lb_id, src16))
        return v->verdict = EJLB_DROP_BLOCKED_SRC;
    if (ttl >= 0 && ttl <= 1)  /* read from IP_TTL / IPV6_HOPLIMIT ancillary data; -1 = unknown */
        return v->verdict = EJLB_DROP_TTL;
    uint64_t tick = ejlb_rd64(p + EJLB_LB_OFF_TICK);
    int epoch = epoch_for(lb, tick);
    if (epoch < 0)
        return v->verdict = EJLB_DROP_EPOCH_MISS;
    v->epoch = epoch;
    uint16_t key = version == EJLB_LB_V2 ? (uint16_t)tick : ejlb_rd16(p + EJLB_LB_OFF_SLOT_SELECT);
    int slot = (key ^ lb->slot_xor) & ((1u << lb->slot_bits) - 1);
    v->slot = slot;
    uint16_t mid = slot < EJLB_CALENDAR_SLOTS ? t->calendar[lb_id][epoch][slot] : EJLB_UNASSIGNED;
    if (mid == EJLB_UNASSIGNED)
        return v->verdict = EJLB_DROP_CALENDAR_MISS;
    v->member_id = mid;
    const struct ejlb_swlb_member *m = mid < EJLB_MAX_MEMBERS ? &t->member[lb_id][mid] : NULL;
    if (!m || m->family != family || m->drop)
        return v->verdict = EJLB_DROP_MEMBER_MISS;
    uint16_t sel = ejlb_rd16(p + EJLB_LB_OFF_PORT_SELECT);
    v->dport = m->base_port + (sel & ((1u << m->port_bits) - 1));
    v->strip = m->keep_lb_header ? 0 : EJLB_LB_HEADER_LEN;
    return v->verdict = EJLB_DROP_FORWARD;
}

/* --- sending ----------------------------------------------------------------------------------- */
static void set_dest(struct sockaddr_in6 *dst, const struct ejlb_swlb_member *m, int port)
{
    memset(dst, 0, sizeof *dst);
    if (m->family == 4) {
        struct sockaddr_in *d4 = (struct sockaddr_in *)dst;
        d4->sin_family = AF_INET;
        d4->sin_port = htons((uint16_t)port);
        memcpy(&d4->sin_addr, m->ip + 12, 4);
    } else {
        dst->sin6_family = AF_INET6;
        dst->sin6_port = htons((uint16_t)port);
        memcpy(&dst->sin6_addr, m->ip, 16);
    }
}

static int same_dest(const struct sockaddr_in6 *a, const struct sockaddr_in6 *b)
{
    if (a->sin6_family != b->sin6_family || a->sin6_port != b->sin6_port)
        return 0;
    if (a->sin6_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0;
}

/* Append one datagram; joins the previous GSO group when it goes to the same place with the same
 * size (a shorter datagram may close a group: GSO allows a short last segment). */
static void tx_add(struct worker *w, int lb_id, int member_id, const struct ejlb_swlb_member *m, int port,
                   int ttl, uint8_t *data, uint32_t len)
{
    struct sockaddr_in6 dst;
    set_dest(&dst, m, port);
    w->txiov[w->niov].iov_base = data;
    w->txiov[w->niov].iov_len = len;
    if (w->ntx > 0) {
        struct mmsghdr *g = &w->tx[w->ntx - 1];
        struct msghdr *mh = &g->msg_hdr;
        size_t total = 0;
        for (size_t i = 0; i < mh->msg_iovlen; i++)
            total += mh->msg_iov[i].iov_len;
        uint32_t seg = w->txseg[w->ntx - 1];
        uint32_t last = (uint32_t)mh->msg_iov[mh->msg_iovlen - 1].iov_len;
        if (!w->nogso[lb_id][member_id] && last == seg && len <= seg && len > 0 && mh->msg_iovlen < EJLB_UDP_MAX_SEGMENTS &&
            total + len <= GSO_MAX_BYTES && w->txttl[w->ntx - 1] == ttl && same_dest(&w->txname[w->ntx - 1], &dst)) {
            mh->msg_iovlen++;
            w->niov++;
            return;
        }
    }
    struct mmsghdr *g = &w->tx[w->ntx];
    memset(g, 0, sizeof *g);
    w->txname[w->ntx] = dst;
    g->msg_hdr.msg_name = &w->txname[w->ntx];
    g->msg_hdr.msg_namelen = m->family == 4 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    g->msg_hdr.msg_iov = &w->txiov[w->niov];
    g->msg_hdr.msg_iovlen = 1;
    w->txseg[w->ntx] = (uint16_t)len;
    w->txmember[w->ntx] = (uint32_t)lb_id << 16 | (uint32_t)member_id;
    w->txttl[w->ntx] = (int16_t)ttl;
    w->ntx++;
    w->niov++;
}

/* Ancillary data of one send: the GSO segment size (when segs > 1) and the outgoing TTL / hop limit. */
static size_t tx_control(char *buf, const struct sockaddr_in6 *dst, int segs, uint16_t seg, int ttl)
{
    struct msghdr mh = {.msg_control = buf, .msg_controllen = CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    size_t used = 0;
    if (segs > 1) {
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &seg, sizeof seg);
        used += CMSG_SPACE(sizeof(uint16_t));
        c = (struct cmsghdr *)(buf + used);
    }
    if (ttl >= 0) {
        int v6 = dst->sin6_family == AF_INET6;
        c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
        c->cmsg_type = v6 ? IPV6_HOPLIMIT : IP_TTL;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &ttl, sizeof ttl);
        used += CMSG_SPACE(sizeof(int));
    }
    return used;
}

static void send_plain(struct worker *w, int fd, struct msghdr *mh, int ttl)
{
    /* GSO refused (e.g. segment larger than the egress MTU allows): one datagram per segment */
    char ctl[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))];
    size_t clen = tx_control(ctl, mh->msg_name, 1, 0, ttl);
    for (size_t i = 0; i < mh->msg_iovlen; i++) {
        struct msghdr one = {.msg_name = mh->msg_name, .msg_namelen = mh->msg_namelen,
                             .msg_iov = &mh->msg_iov[i], .msg_iovlen = 1,
                             .msg_control = clen ? ctl : NULL, .msg_controllen = clen};
        if (sendmsg(fd, &one, 0) < 0)
            EJLB_COUNT(w->stats[EJLB_SWLB_STAT_SEND_ERRORS], 1);
    }
    EJLB_COUNT(w->stats[EJLB_SWLB_STAT_GSO_FALLBACKS], 1);
}

static void tx_flush(struct worker *w, int fd)
{
    for (int i = 0; i < w->ntx; i++) {
        struct msghdr *mh = &w->tx[i].msg_hdr;
        size_t clen = tx_control(w->txctl[i], &w->txname[i], (int)mh->msg_iovlen, w->txseg[i], w->txttl[i]);
        mh->msg_control = clen ? w->txctl[i] : NULL;
        mh->msg_controllen = clen;
    }
    int done = 0;
    while (done < w->ntx) {
        int n = sendmmsg(fd, w->tx + done, (unsigned)(w->ntx - done), 0);
        EJLB_COUNT(w->stats[EJLB_SWLB_STAT_SEND_CALLS], 1);
        if (n > 0) {
            EJLB_COUNT(w->stats[EJLB_SWLB_STAT_SEND_MSGS], (uint64_t)n);
            done += n;
            continue;
        }
        if (errno == EINTR)
            continue;
        /* the message at `done` failed: retry it without GSO, or count and skip it */
        struct msghdr *mh = &w->tx[done].msg_hdr;
        if (mh->msg_iovlen > 1 && (errno == EINVAL || errno == EIO || errno == EMSGSIZE)) {
            uint32_t who = w->txmember[done];
            w->nogso[who >> 16][who & 0xFFFF] = 1;  /* until the next table install */
            send_plain(w, fd, mh, w->txttl[done]);
        }
        else
            EJLB_COUNT(w->stats[EJLB_SWLB_STAT_SEND_ERRORS], 1);
        done++;
    }
    w->ntx = w->niov = 0;
}

/* --- the worker loop --------------------------------------------------------------------------- */
static void src16_of(const struct sockaddr_in6 *sa, uint8_t *out, int *family)
{
    if (sa->sin6_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xFF;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = 4;
    } else {
        memcpy(out, &sa->sin6_addr, 16);
        *family = 6;
    }
}

/* GRO segment size (0: a single datagram) and TTL / hop limit (-1: not reported) of one buffer. */
static void rx_control(struct msghdr *mh, int *gro, int *ttl)
{
    *gro = 0;
    *ttl = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        int v;
        memcpy(&v, CMSG_DATA(c), sizeof v);
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO)
            *gro = v;
        else if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
                 (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
            *ttl = v;
    }
}

static void handle_batch(struct worker *w, const struct ejlb_swlb_tables *t, int fd, int lb_id, int n)
{
    struct ejlb_swlb_verdict v;
    uint8_t src16[16];
    int family;
    for (int i = 0; i < n; i++) {
        struct msghdr *mh = &w->rx[i].msg_hdr;
        uint32_t total = w->rx[i].msg_len;
        if (mh->msg_flags & MSG_TRUNC)
            continue;  /* cannot happen with 64 KiB buffers; never forward a cut datagram */
        src16_of(&w->rxname[i], src16, &family);
        int seg, ttl;  /* GRO only merges datagrams with equal IP headers, so one TTL holds for all */
        rx_control(mh, &seg, &ttl);
        if (seg <= 0 || (uint32_t)seg > total)
            seg = total ? (int)total : 1;
        uint8_t *base = w->rxbuf + (size_t)i * RX_BUF;
        if (total > (uint32_t)seg)
            EJLB_COUNT(w->stats[EJLB_SWLB_STAT_GRO_SEGMENTS], (total + seg - 1) / seg);
        for (uint32_t off = 0; off < total || (total == 0 && off == 0); off += (uint32_t)seg) {
            uint32_t len = total - off < (uint32_t)seg ? total - off : (uint32_t)seg;
            int d = ejlb_swlb_decide(t, lb_id, family, src16, ttl, base + off, len, &v);
            if (d == EJLB_DROP_NOT_LB) {
                EJLB_COUNT(w->glob[d], 1);
            } else {
                uint64_t *c = w->lbc[lb_id];
                EJLB_COUNT(c[0], 1);
                EJLB_COUNT(c[1], len);
                if (v.version)
                    EJLB_COUNT(c[v.version == EJLB_LB_V2 ? 2 : 3], 1);
                if (d != EJLB_DROP_FORWARD) {
                    EJLB_COUNT(c[EJLB_LB_RX_COUNTERS + d], 1);
                } else {
                    uint64_t *mc = w->mc[lb_id][v.member_id];
                    EJLB_COUNT(mc[0], 1);
                    EJLB_COUNT(mc[1], len - v.strip);
                    if (w->niov == TX_MAX)
                        tx_flush(w, fd);
                    tx_add(w, lb_id, v.member_id, &t->member[lb_id][v.member_id], v.dport, ttl < 0 ? -1 : ttl - 1,
                           base + off + v.strip, len - v.strip);
                }
            }
            if (total == 0)
                break;
        }
    }
    if (w->ntx)
        tx_flush(w, fd);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ejlb_swlb *h = w->h;
    struct epoll_event ev[16];
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
        int ne = epoll_wait(w->epfd, ev, 16, POLL_MS);
        __atomic_add_fetch(&w->loops, 1, __ATOMIC_SEQ_CST);
        for (int k = 0; k < ne; k++) {
            int fd = (int)(ev[k].data.u64 & 0xFFFFFFFF), lb_id = (int)(ev[k].data.u64 >> 32);
            for (int round = 0; round < RX_ROUNDS; round++) {
                for (int i = 0; i < RX_BATCH; i++) {
                    struct msghdr *mh = &w->rx[i].msg_hdr;
                    mh->msg_name = &w->rxname[i];
                    mh->msg_namelen = sizeof w->rxname[i];
                    mh->msg_iov = &w->rxiov[i];
                    mh->msg_iovlen = 1;
                    mh->msg_control = w->rxctl[i];
                    mh->msg_controllen = sizeof w->rxctl[i];
                    mh->msg_flags = 0;
                }
                int n = recvmmsg(fd, w->rx, RX_BATCH, MSG_DONTWAIT, NULL);
                EJLB_COUNT(w->stats[EJLB_SWLB_STAT_RECV_CALLS], 1);
                if (n <= 0)
                    break;
                __atomic_add_fetch(&w->seq, 1, __ATOMIC_SEQ_CST);  /* odd: holding a snapshot */
                const struct ejlb_swlb_tables *t = __atomic_load_n(&h->tables, __ATOMIC_SEQ_CST);
                if (t != w->nogso_tables) {  /* new tables: members may have new routes, try GSO again */
                    memset(w->nogso, 0, sizeof w->nogso);
                    w->nogso_tables = t;
                }
                if (t)
                    handle_batch(w, t, fd, lb_id, n);
                __atomic_add_fetch(&w->seq, 1, __ATOMIC_SEQ_CST);
                if (n < RX_BATCH)
                    break;
            }
        }
        __atomic_add_fetch(&w->loops, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

/* --- control (called from Python, with the GIL released by cffi) -------------------------------- */
static void nap(void)
{
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
}

struct ejlb_swlb *ejlb_swlb_new(int nthreads)
{
    if (nthreads < 1 || nthreads > EJLB_SWLB_MAX_THREADS)
        return NULL;
    struct ejlb_swlb *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->nthreads = nthreads;
    pthread_mutex_init(&h->install_lock, NULL);
    for (int i = 0; i < nthreads; i++) {
        struct worker *w = calloc(1, sizeof *w);
        if (!w || !(w->rxbuf = malloc((size_t)RX_BATCH * RX_BUF)) || (w->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
            if (w)
                free(w->rxbuf);
            free(w);
            ejlb_swlb_free(h);
            return NULL;
        }
        w->h = h;
        w->idx = i;
        for (int j = 0; j < RX_BATCH; j++) {
            w->rxiov[j].iov_base = w->rxbuf + (size_t)j * RX_BUF;
            w->rxiov[j].iov_len = RX_BUF;
        }
        h->w[i] = w;
    }
    return h;
}

int ejlb_swlb_install(struct ejlb_swlb *h, const struct ejlb_swlb_tables *t)
{
    struct ejlb_swlb_tables *copy = malloc(sizeof *copy);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, t, sizeof *copy);
    pthread_mutex_lock(&h->install_lock);
    struct ejlb_swlb_tables *old = __atomic_exchange_n(&h->tables, copy, __ATOMIC_SEQ_CST);
    /* grace period: wait out every worker that may hold `old` (odd sequence number) */
    for (int i = 0; i < h->nthreads; i++) {
        uint64_t s = __atomic_load_n(&h->w[i]->seq, __ATOMIC_SEQ_CST);
        while ((s & 1) && __atomic_load_n(&h->w[i]->seq, __ATOMIC_SEQ_CST) == s)
            nap();
    }
    pthread_mutex_unlock(&h->install_lock);
    free(old);
    return 0;
}

int ejlb_swlb_add_socket(struct ejlb_swlb *h, int thread, int fd, int lb_id)
{
    if (thread < 0 || thread >= h->nthreads || lb_id < 0 || lb_id >= EJLB_NUM_LBS)
        return -EINVAL;
    int on = 1;
    setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);  /* best effort: without GRO, one datagram per buffer */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    /* the TTL stage: every buffer reports its TTL / hop limit */
    int rc = ss.ss_family == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on)
                                      : setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &on, sizeof on);
    if (rc < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)lb_id << 32};
    return epoll_ctl(h->w[thread]->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int ejlb_swlb_remove_socket(struct ejlb_swlb *h, int thread, int fd)
{
    if (thread < 0 || thread >= h->nthreads)
        return -EINVAL;
    struct worker *w = h->w[thread];
    int rc = epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
    /* the worker may still hold this fd from its last epoll_wait: wait until that round is over,
     * so the caller may close (and the kernel reuse) the descriptor */
    if (h->started) {
        uint64_t l = __atomic_load_n(&w->loops, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&w->loops, __ATOMIC_SEQ_CST) < l + 2 + (l & 1))
            nap();
    }
    return rc;
}

int ejlb_swlb_start(struct ejlb_swlb *h)
{
    if (h->started)
        return 0;
    for (int i = 0; i < h->nthreads; i++) {
        int rc = pthread_create(&h->w[i]->thread, NULL, worker_main, h->w[i]);
        if (rc) {
            __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
            for (int j = 0; j < i; j++)
                pthread_join(h->w[j]->thread, NULL);
            return -rc;
        }
    }
    h->started = 1;
    return 0;
}

void ejlb_swlb_stop(struct ejlb_swlb *h)
{
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
    if (h->started)
        for (int i = 0; i < h->nthreads; i++)
            pthread_join(h->w[i]->thread, NULL);
    h->started = 0;
}

void ejlb_swlb_free(struct ejlb_swlb *h)
{
    if (!h)
        return;
    ejlb_swlb_stop(h);
    for (int i = 0; i < h->nthreads; i++) {
        if (!h->w[i])
            continue;
        close(h->w[i]->epfd);
        free(h->w[i]->rxbuf);
        free(h->w[i]);
    }
    free(h->tables);
    pthread_mutex_destroy(&h->install_lock);
    free(h);
}

void ejlb_swlb_counters(struct ejlb_swlb *h, uint64_t *lb_out, uint64_t *member_out, uint64_t *glob_out)
{
    const size_t nl = EJLB_NUM_LBS * EJLB_LB_COUNTERS;
    const size_t nm = (size_t)EJLB_NUM_LBS * EJLB_MAX_MEMBERS * EJLB_MEMBER_COUNTERS;
    memset(lb_out, 0, nl * sizeof *lb_out);
    memset(member_out, 0, nm * sizeof *member_out);
    memset(glob_out, 0, EJLB_DROP_CODES * sizeof *glob_out);
    for (int i = 0; i < h->nthreads; i++) {
        const uint64_t *l = &h->w[i]->lbc[0][0], *m = &h->w[i]->mc[0][0][0];
        for (size_t k = 0; k < nl; k++)
            lb_out[k] += EJLB_LOAD(l[k]);
        for (size_t k = 0; k < nm; k++)
            member_out[k] += EJLB_LOAD(m[k]);
        for (size_t k = 0; k < EJLB_DROP_CODES; k++)
            glob_out[k] += EJLB_LOAD(h->w[i]->glob[k]);
    }
}

void ejlb_swlb_stats(struct ejlb_swlb *h, uint64_t *out)
{
    uint64_t one[EJLB_SWLB_STATS];
    memset(out, 0, EJLB_SWLB_STATS * sizeof *out);
    for (int i = 0; i < h->nthreads; i++) {
        ejlb_swlb_thread_stats(h, i, one);
        for (int k = 0; k < EJLB_SWLB_STATS; k++)
            out[k] += one[k];
    }
}

int ejlb_swlb_thread_stats(struct ejlb_swlb *h, int thread, uint64_t *out)
{
    if (thread < 0 || thread >= h->nthreads)
        return -EINVAL;
    for (int k = 0; k < EJLB_SWLB_STATS; k++)
        out[k] = EJLB_LOAD(h->w[thread]->stats[k]);
    return 0;
}

void ejlb_swlb_cpu_ns(struct ejlb_swlb *h, uint64_t *out)
{
    for (int i = 0; i < h->nthreads; i++) {
        clockid_t cid;
        struct timespec ts;
        out[i] = 0;
        if (h->started && pthread_getcpuclockid(h->w[i]->thread, &cid) == 0 && clock_gettime(cid, &ts) == 0)
            out[i] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
}
