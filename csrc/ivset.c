/* Interval set: see ivset.h. */
#include "ivset.h"

#include <stdlib.h>
#include <string.h>

void ejlb_ivset_init(ejlb_ivset *set)
{
    set->iv = set->inline_iv;
    set->n = 0;
    set->cap = EJLB_IVSET_INLINE;
}

void ejlb_ivset_free(ejlb_ivset *set)
{
    if (set->iv != set->inline_iv)
        free(set->iv);
    ejlb_ivset_init(set);
}

static int insert_at(ejlb_ivset *set, uint32_t at, ejlb_iv v, ejlb_ivset_grow_fn grow, void *ctx)
{
    if (set->n == set->cap) {
        int64_t more = (int64_t)(set->cap * sizeof(ejlb_iv)); /* doubling */
        if (grow && grow(ctx, more))
            return -1;
        ejlb_iv *n = malloc(2 * (size_t)more);
        if (!n) {
            if (grow)
                grow(ctx, -more); /* hand the charge back */
            return -1;
        }
        memcpy(n, set->iv, set->n * sizeof(ejlb_iv));
        if (set->iv != set->inline_iv)
            free(set->iv);
        set->iv = n;
        set->cap *= 2;
    }
    memmove(set->iv + at + 1, set->iv + at, (set->n - at) * sizeof(ejlb_iv));
    set->iv[at] = v;
    set->n++;
    return 0;
}

/* first interval whose end is >= s (touching counts), by binary search */
static uint32_t first_reaching(const ejlb_iv *iv, uint32_t n, uint32_t s)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (iv[mid].e < s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int64_t ejlb_ivset_add(ejlb_ivset *set, uint32_t s, uint32_t e, ejlb_ivset_grow_fn grow, void *ctx)
{
    uint32_t n = set->n;
    if (n == 0 || set->iv[n - 1].e <= s) { /* in-order arrival: the common case */
        if (n && set->iv[n - 1].e == s) {
            set->iv[n - 1].e = e;
            return e - s;
        }
        return insert_at(set, n, (ejlb_iv){s, e}, grow, ctx) ? -1 : (int64_t)(e - s);
    }
    uint32_t lo = first_reaching(set->iv, n, s);
    uint32_t end = lo; /* intervals [lo, end) touch or overlap [s, e) */
    uint64_t covered = 0;
    while (end < n && set->iv[end].s <= e) {
        uint32_t a = set->iv[end].s > s ? set->iv[end].s : s;
        uint32_t b = set->iv[end].e < e ? set->iv[end].e : e;
        if (b > a)
            covered += b - a;
        end++;
    }
    if (end == lo)
        return insert_at(set, lo, (ejlb_iv){s, e}, grow, ctx) ? -1 : (int64_t)(e - s);
    ejlb_iv m = {set->iv[lo].s < s ? set->iv[lo].s : s, set->iv[end - 1].e > e ? set->iv[end - 1].e : e};
    set->iv[lo] = m;
    memmove(set->iv + lo + 1, set->iv + end, (n - end) * sizeof(ejlb_iv));
    set->n -= end - lo - 1;
    return (int64_t)(e - s) - (int64_t)covered;
}

uint32_t ejlb_ivset_gap_end(const ejlb_ivset *set, uint32_t at, uint32_t limit)
{
    uint32_t lo = 0, hi = set->n; /* first interval that ends after `at` */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (set->iv[mid].e <= at)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == set->n)
        return limit;
    return set->iv[lo].s <= at ? 0 : set->iv[lo].s;
}
