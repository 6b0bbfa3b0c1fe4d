/* The one way the C core keeps counters: each counter has one writing thread and is read by others
 * while that thread runs (stats calls during the data path). Relaxed atomics, so no reader sees a
 * torn value and the writer pays no locked instruction; with one writer a relaxed load + store is an
 * exact increment. (Shared totals with several writers, like the receiver's pending-byte cap, use
 * compare-and-swap where they live instead.) */
#ifndef EJLB_COUNTERS_H
#define EJLB_COUNTERS_H

#define EJLB_COUNT(x, n) __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define EJLB_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define EJLB_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

#endif
