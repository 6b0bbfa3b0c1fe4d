/* One recvmmsg batch of a receive thread, with speculative direct placement of payloads into their
 * event buffers (see rx_batch); everything received goes through the reassembler's rules. */
#define _GNU_SOURCE
#include "recv_core.h"

#include <netinet/in.h>
#include <string.h>

static size_t hdr_len(const rxthr_t *t) { return t->rx->with_lb ? EJLB_HEADERS_LEN : EJLB_RE_HEADER_LEN; }

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
        rx_commit(t, pl->i, pl->P + (uint32_t)j * L, (uint32_t)(sl - H), NULL, now);
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
    int32_t i = rx_pend_find(t, evn, id);
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
    int32_t i = rx_pend_find(t, pr->evn, pr->data_id);
    if (i < 0)
        return 0;
    pend_t *p = &t->ev[i];
    uint32_t lim = ejlb_ivset_gap_end(&p->rcvd, pr->next, p->length), cur = pr->next, L = pr->L;
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
int rx_batch(rxthr_t *t, int sock, int *full)
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
            rx_on_buffer(t, t->data + (size_t)k * RXBUF, t->msgs[k].msg_len, t->seg[k], now);
    }
    pr->streak = nplan && m == n;
    spec_learn(t, sock, n, maxsegs);
    return n;
}
