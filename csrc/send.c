/* Batched UDP send of EJFAT events (see send.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ejlb_facts.h" /* UDP_SEGMENT where libc lacks it */
#include "send.h"
#include "wire.h"
#include "counters.h"


/* One flush = one run of sendmmsg calls. 64 GSO messages of <= 64 KiB each bound a flush to
 * 4 MiB of payload; 1024 datagrams bound the header table (and UIO_MAXIOV per message). */
#define TX_MAX_MSGS 64
#define TX_MAX_DGRAMS 1024
#define TX_MAX_MSG_BYTES 65535

typedef union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} tx_cmsg;

struct ejlb_tx {
    struct sockaddr_storage dst;
    socklen_t dstlen;
    int version;
    uint32_t fragment;
    int copy;
    ejlb_tx_stats st;

    /* the batch being laid out */
    int nmsg, ndgram;
    struct mmsghdr msgs[TX_MAX_MSGS];
    struct sockaddr_storage names[TX_MAX_MSGS];
    tx_cmsg cmsg[TX_MAX_MSGS];
    int first_dgram[TX_MAX_MSGS + 1]; /* datagrams of message m: first_dgram[m] .. [m+1]-1 */
    uint32_t msg_seg[TX_MAX_MSGS];    /* length of message m's datagrams (the last may be shorter) */
    uint32_t msg_bytes[TX_MAX_MSGS];
    int open;                         /* message that may take more datagrams, or -1 */
    uint32_t max_msg_bytes;           /* segments * full datagram: within the 16-bit IP length */
    struct iovec iov[2 * TX_MAX_DGRAMS];
    struct iovec staged[TX_MAX_MSGS]; /* copy mode: one iovec per message */
    uint8_t hdr[TX_MAX_DGRAMS][EJLB_HEADERS_LEN];
    uint8_t *stage; /* copy mode only: TX_MAX_MSGS * TX_MAX_MSG_BYTES */
};

ejlb_tx *ejlb_tx_new(int family, const uint8_t *addr, uint32_t scope_id, int lb_version,
                     uint32_t fragment, uint32_t segments, int gso, int copy)
{
    if ((family != AF_INET && family != AF_INET6) || !addr || !ejlb_lb_version_ok(lb_version)
        || fragment == 0 || segments == 0 || segments > EJLB_UDP_MAX_SEGMENTS
        || (uint64_t)segments * (fragment + EJLB_HEADERS_LEN) > TX_MAX_MSG_BYTES)
        return NULL;
    ejlb_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        return NULL;
    if (copy && !(tx->stage = malloc((size_t)TX_MAX_MSGS * TX_MAX_MSG_BYTES))) {
        free(tx);
        return NULL;
    }
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&tx->dst;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, addr, 4);
        tx->dstlen = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&tx->dst;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, addr, 16);
        a->sin6_scope_id = scope_id;
        tx->dstlen = sizeof *a;
    }
    tx->version = lb_version;
    tx->fragment = fragment;
    tx->copy = copy;
    tx->open = -1;
    tx->max_msg_bytes = segments * (fragment + EJLB_HEADERS_LEN);
    tx->st.gso = gso == EJLB_TX_GSO_ON && segments > 1;
    return tx;
}

void ejlb_tx_free(ejlb_tx *tx)
{
    if (tx) {
        free(tx->stage);
        free(tx);
    }
}

/* Counters are written by the sending thread and read by any other (Sender.stats) while a send
 * runs: counters.h. */

void ejlb_tx_get_stats(const ejlb_tx *tx, ejlb_tx_stats *out)
{
    out->events = EJLB_LOAD(tx->st.events);
    out->datagrams = EJLB_LOAD(tx->st.datagrams);
    out->bytes = EJLB_LOAD(tx->st.bytes);
    out->messages = EJLB_LOAD(tx->st.messages);
    out->syscalls = EJLB_LOAD(tx->st.syscalls);
    out->send_errors = EJLB_LOAD(tx->st.send_errors);
    out->last_errno = EJLB_LOAD(tx->st.last_errno);
    out->gso = EJLB_LOAD(tx->st.gso);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int dgram_count(const struct ejlb_tx *tx, int m) { return tx->first_dgram[m + 1] - tx->first_dgram[m]; }

/* Turn message m into the msghdr the kernel sees (iovec pairs, or one staged copy). */
static void finish_msg(struct ejlb_tx *tx, int m)
{
    struct msghdr *h = &tx->msgs[m].msg_hdr;
    int d0 = tx->first_dgram[m], nd = dgram_count(tx, m);
    memset(h, 0, sizeof *h);
    h->msg_name = &tx->names[m];
    h->msg_namelen = tx->dstlen;
    if (tx->copy) {
        uint8_t *p = tx->stage + (size_t)m * TX_MAX_MSG_BYTES, *q = p;
        for (int i = 2 * d0; i < 2 * (d0 + nd); i++) {
            memcpy(q, tx->iov[i].iov_base, tx->iov[i].iov_len);
            q += tx->iov[i].iov_len;
        }
        tx->staged[m].iov_base = p;
        tx->staged[m].iov_len = (size_t)(q - p);
        h->msg_iov = &tx->staged[m];
        h->msg_iovlen = 1;
    } else {
        h->msg_iov = &tx->iov[2 * d0];
        h->msg_iovlen = 2 * nd;
    }
    if (nd > 1) {
        /* every datagram but the last is exactly msg_seg[m] long */
        struct cmsghdr *c = &tx->cmsg[m].align;
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t seg = (uint16_t)tx->msg_seg[m];
        memcpy(CMSG_DATA(c), &seg, sizeof seg);
        h->msg_control = tx->cmsg[m].buf;
        h->msg_controllen = sizeof tx->cmsg[m].buf;
    }
}

/* What a kernel or route says when it will not segment: EIO (no checksum offload, xfrm), EINVAL
 * or EMSGSIZE (segment above the route MTU; which one depends on the kernel version), ENOPROTOOPT
 * and EOPNOTSUPP (no UDP GSO at all). Our super-datagrams stay within the 64 KiB and segment-count
 * limits, so on a GSO message these mean "not here". */
static int gso_refusal(int e)
{
    return e == EIO || e == EINVAL || e == EMSGSIZE || e == ENOPROTOOPT || e == EOPNOTSUPP;
}

/* Send message m's datagrams one by one without GSO (the once-only fallback path). */
static void send_plain(struct ejlb_tx *tx, int fd, int m)
{
    for (int d = tx->first_dgram[m]; d < tx->first_dgram[m + 1]; d++) {
        struct msghdr h = {.msg_name = &tx->names[m], .msg_namelen = tx->dstlen,
                           .msg_iov = &tx->iov[2 * d], .msg_iovlen = 2};
        ssize_t r;
        do
            r = sendmsg(fd, &h, 0);
        while (r < 0 && errno == EINTR);
        EJLB_COUNT(tx->st.syscalls, 1);
        if (r < 0) {
            EJLB_COUNT(tx->st.send_errors, 1);
            EJLB_STORE(tx->st.last_errno, errno);
        } else {
            EJLB_COUNT(tx->st.datagrams, 1);
            EJLB_COUNT(tx->st.bytes, (uint64_t)r);
            EJLB_COUNT(tx->st.messages, 1);
        }
    }
}

static void flush(struct ejlb_tx *tx, int fd)
{
    int m = 0, tries = 0;
    for (int i = 0; i < tx->nmsg; i++)
        finish_msg(tx, i);
    while (m < tx->nmsg) {
        int r = sendmmsg(fd, &tx->msgs[m], (unsigned)(tx->nmsg - m), 0);
        EJLB_COUNT(tx->st.syscalls, 1);
        if (r > 0) {
            uint64_t dg = 0, by = 0;
            for (int i = m; i < m + r; i++) {
                dg += (uint64_t)dgram_count(tx, i);
                by += tx->msgs[i].msg_len;
            }
            EJLB_COUNT(tx->st.datagrams, dg);
            EJLB_COUNT(tx->st.bytes, by);
            EJLB_COUNT(tx->st.messages, (uint64_t)r);
            m += r;
            tries = 0;
            continue;
        }
        int e = errno;
        if (e == EINTR)
            continue;
        if ((e == ENOBUFS || e == EAGAIN) && ++tries < 4)
            continue; /* transient: the queue drains */
        if (dgram_count(tx, m) > 1 && gso_refusal(e)) {
            /* stop using GSO for good and send the rest of the batch plainly */
            EJLB_STORE(tx->st.gso, 0);
            for (; m < tx->nmsg; m++)
                send_plain(tx, fd, m);
            break;
        }
        EJLB_COUNT(tx->st.send_errors, (uint64_t)dgram_count(tx, m));
        EJLB_STORE(tx->st.last_errno, e);
        m++;
        tries = 0;
    }
    tx->nmsg = 0;
    tx->ndgram = 0;
    tx->first_dgram[0] = 0;
    tx->open = -1;
}

/* Append one datagram (header + fragment) to the batch. With GSO, consecutive datagrams of one
 * length to one destination share a message, whichever events they belong to: the kernel cuts the
 * message every msg_seg bytes, and only the last datagram may be shorter (it closes the message).
 * So a large event becomes super-datagrams of full fragments, and a run of equal small events
 * (fixed-size DAQ frames) travels as one super-datagram too. */
static void add_dgram(struct ejlb_tx *tx, int fd, const ejlb_tx_event *ev, const uint8_t *head,
                      uint32_t off, uint32_t flen)
{
    uint32_t dlen = EJLB_HEADERS_LEN + flen;
    if (tx->ndgram == TX_MAX_DGRAMS)
        flush(tx, fd);
    int m = tx->open;
    if (m >= 0 && (ev->dport != get_port(&tx->names[m]) || dlen > tx->msg_seg[m]
                   || dgram_count(tx, m) == EJLB_UDP_MAX_SEGMENTS
                   || tx->msg_bytes[m] + dlen > tx->max_msg_bytes))
        m = -1;
    if (m < 0) {
        if (tx->nmsg == TX_MAX_MSGS)
            flush(tx, fd);
        m = tx->nmsg++;
        tx->names[m] = tx->dst;
        set_port(&tx->names[m], ev->dport);
        tx->msg_seg[m] = dlen;
        tx->msg_bytes[m] = 0;
    }
    int d = tx->ndgram++;
    memcpy(tx->hdr[d], head, EJLB_HEADERS_LEN); /* the event's header; only the offset differs */
    ejlb_be32(tx->hdr[d] + EJLB_LB_HEADER_LEN + EJLB_RE_OFF_OFFSET, off);
    tx->iov[2 * d].iov_base = tx->hdr[d];
    tx->iov[2 * d].iov_len = EJLB_HEADERS_LEN;
    tx->iov[2 * d + 1].iov_base = (uint8_t *)ev->data + (flen ? off : 0);
    tx->iov[2 * d + 1].iov_len = flen;
    tx->first_dgram[tx->nmsg] = tx->ndgram;
    tx->msg_bytes[m] += dlen;
    tx->open = tx->st.gso && dlen == tx->msg_seg[m] ? m : -1;
}

static void add_event(struct ejlb_tx *tx, int fd, const ejlb_tx_event *ev)
{
    uint32_t len = (uint32_t)ev->len, frag = tx->fragment;
    uint8_t head[EJLB_HEADERS_LEN]; /* written once per event, copied per datagram */
    ejlb_put_lb(head, tx->version, ev->tick, ev->entropy, ev->slot_select);
    ejlb_put_re(head + EJLB_LB_HEADER_LEN, ev->data_id, 0, len, ev->event_number);
    if (len == 0) {
        add_dgram(tx, fd, ev, head, 0, 0); /* a zero-length event is one header-only datagram */
        return;
    }
    for (uint32_t off = 0; off < len; off += frag) {
        add_dgram(tx, fd, ev, head, off, len - off < frag ? len - off : frag);
        if (off > UINT32_MAX - frag)
            break; /* the last fragment of an event near 4 GiB: off + frag would wrap */
    }
}

int64_t ejlb_tx_send(ejlb_tx *tx, int fd, const ejlb_tx_event *events, int n)
{
    uint64_t before = EJLB_LOAD(tx->st.datagrams);
    for (int i = 0; i < n; i++) {
        if (events[i].len > UINT32_MAX) { /* the RE length is 32 bits; Python checks first */
            EJLB_COUNT(tx->st.send_errors, 1);
            EJLB_STORE(tx->st.last_errno, EMSGSIZE);
            continue;
        }
        add_event(tx, fd, &events[i]);
    }
    if (tx->nmsg)
        flush(tx, fd);
    EJLB_COUNT(tx->st.events, (uint64_t)(n > 0 ? n : 0));
    return (int64_t)(EJLB_LOAD(tx->st.datagrams) - before);
}

int64_t ejlb_tx_send1(ejlb_tx *tx, int fd, const void *data, uint64_t len, uint64_t tick,
                      uint64_t event_number, uint16_t entropy, uint16_t slot_select,
                      uint16_t data_id, uint16_t dport)
{
    ejlb_tx_event ev = {data, len, tick, event_number, entropy, slot_select, data_id, dport};
    return ejlb_tx_send(tx, fd, &ev, 1);
}
