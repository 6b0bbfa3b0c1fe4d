/* Interval set of received byte ranges: sorted, disjoint, non-touching [s, e) intervals, the first
 * few kept inline (no heap allocation for events that arrive in order). A pure structure with its
 * own test (tests/test_rangeset.py, against ejlb.shim.rangeset.RangeSet, the Python twin used by
 * the reassembly reference), as aioquic keeps rangeset.py apart from the connection.
 *
 * Growing beyond the inline intervals asks `grow(ctx, bytes)` first (NULL: always allowed); the
 * receiver charges that memory to its byte cap there and may refuse (the only policy in here). */
#ifndef EJLB_IVSET_H
#define EJLB_IVSET_H
#include <stdint.h>

/* EJLB_CDEF_BEGIN */
#define EJLB_IVSET_INLINE 4

typedef struct {
    uint32_t s, e; /* [s, e) */
} ejlb_iv;

typedef struct {
    ejlb_iv *iv; /* n intervals, sorted, disjoint, non-touching; == inline_iv until it grows */
    ejlb_iv inline_iv[EJLB_IVSET_INLINE];
    uint32_t n, cap;
} ejlb_ivset;

/* charge `bytes` (> 0; returns 0 to go ahead) or hand back a charge (< 0, after a failed malloc) */
typedef int (*ejlb_ivset_grow_fn)(void *ctx, int64_t bytes);

void ejlb_ivset_init(ejlb_ivset *set);
void ejlb_ivset_free(ejlb_ivset *set); /* releases grown memory; the set is then empty */
/* Adds [s, e) (s < e). Returns how many of its bytes were not in the set before, or -1 when the set
 * had to grow and could not (grow refused, or out of memory): the set is then unchanged. */
int64_t ejlb_ivset_add(ejlb_ivset *set, uint32_t s, uint32_t e, ejlb_ivset_grow_fn grow, void *ctx);
/* End of the run of missing bytes that starts at `at`, missing up to `limit` at most: 0 when `at`
 * is in the set, else the start of the next interval after it, or `limit` when there is none. */
uint32_t ejlb_ivset_gap_end(const ejlb_ivset *set, uint32_t at, uint32_t limit);
/* EJLB_CDEF_END */
#endif
