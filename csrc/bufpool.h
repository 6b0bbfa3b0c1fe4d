/* Process-wide pool of event buffers (power-of-two size classes): a steady stream of similar
 * events reuses already faulted-in memory instead of paying mmap + page faults per event. The
 * receiver fills the buffers; they leave through Python objects that may outlive the receiver,
 * hence one pool for the process. */
#ifndef EJLB_BUFPOOL_H
#define EJLB_BUFPOOL_H
#include <stdint.h>

/* A buffer of at least n bytes, 64-byte aligned (NULL when out of memory); ejlb_buf_release frees it. */
uint8_t *ejlb_buf_get(uint64_t n);

/* EJLB_CDEF_BEGIN */
/* Event buffers come from a process-wide pool and outlive the receiver that filled them. */
void ejlb_buf_release(uint8_t *data);
uint64_t ejlb_buf_pooled_bytes(void); /* bytes of released buffers kept for reuse */
void ejlb_buf_pool_trim(void);        /* frees them all */
/* EJLB_CDEF_END */
#endif
