/* Event buffer pool: see bufpool.h. */
#include "bufpool.h"

#include <pthread.h>
#include <stdlib.h>

#define POOL_MIN_SHIFT 12
#define POOL_MAX_SHIFT 28 /* buffers above 256 MiB are allocated and freed exactly */
#define POOL_DEPTH 16
#define POOL_CACHE_BYTES (256ull << 20)
#define BUF_HDR 64 /* keeps the payload 64-byte aligned; holds the size class */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool[POOL_MAX_SHIFT + 1][POOL_DEPTH];
static int pool_n[POOL_MAX_SHIFT + 1];
static uint64_t pool_bytes;

uint8_t *ejlb_buf_get(uint64_t n)
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
